"""Evaluation harness for LongVideoBench and VNBench (multiple choice, local files only).

Datasets (as their authors release them):

* LongVideoBench: ``<root>/lvb_val.json`` (a list of ``{"id", "video_path", "question",
  "candidates", "correct_choice", "duration_group", ...}``), videos under ``<root>/videos/``.
* VNBench: a JSON (or JSON-lines) list of ``{"video", "question", "options" (4), "gt" (the
  correct option's text), "type", "try", ...}``; every question comes in 4 tries with shuffled
  options and counts as solved only when all its tries are answered correctly (the authors'
  scoring), accuracy averaged over task types.

``run_benchmark`` asks the model every item (with Spava or dense attention) and writes one JSON
line per item; ``score`` turns such lines into accuracies. A missing or malformed annotation file
or item raises :class:`DatasetError` naming the file, the item and the field.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

__all__ = ["Item", "DatasetError", "load_longvideobench", "load_vnbench", "load_items",
           "parse_choice", "score", "run_benchmark"]

INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class Item:
    id: str
    video: str  # absolute path
    prompt: str  # question, lettered options and the instruction
    answer: str  # correct letter
    group: str  # LongVideoBench: duration group; VNBench: task type
    question_key: str  # VNBench: the tries of one question share it; else the id


def _letters(options: list[str]) -> str:
    return "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(options))


class DatasetError(ValueError):
    """A dataset that cannot be used as given: the message names the file, item and field."""


def _read(path: str) -> list[dict]:
    """The items of a JSON list or JSON-lines file."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file '{path}' not found")
    with open(path) as f:
        try:
            if path.endswith(".jsonl"):
                items = [json.loads(line) for line in f if line.strip()]
            else:
                items = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"annotation file '{path}' is not valid JSON: {e}") from None
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise DatasetError(f"annotation file '{path}' must hold a list of objects (one per item)")
    return items


def _field(d: dict, key: str, what: str):
    if key not in d:
        raise DatasetError(f"{what} has no field '{key}'")
    return d[key]


def _options(d: dict, key: str, what: str) -> list[str]:
    options = _field(d, key, what)
    if not isinstance(options, list) or not 2 <= len(options) <= 26:
        raise DatasetError(f"{what}: '{key}' must be a list of 2 to 26 options, got {options!r}")
    return [str(o) for o in options]


def load_longvideobench(root: str, annotations: str = "lvb_val.json") -> list[Item]:
    path = os.path.join(root, annotations)
    items = []
    for i, d in enumerate(_read(path)):
        what = f"LongVideoBench item {d.get('id', i)} in '{path}'"
        if "correct_choice" not in d:
            raise DatasetError(f"{what} has no correct_choice (the test split has no answers)")
        options = _options(d, "candidates", what)
        choice = d["correct_choice"]
        if isinstance(choice, bool) or not isinstance(choice, int) or not (
                0 <= choice < len(options)):
            raise DatasetError(f"{what}: correct_choice {choice!r} is not an option index "
                               f"in [0, {len(options)})")
        items.append(Item(str(_field(d, "id", what)),
                          os.path.join(root, "videos", str(_field(d, "video_path", what))),
                          f"Question: {_field(d, 'question', what)}\n{_letters(options)}\n"
                          f"{INSTRUCTION}",
                          chr(ord("A") + choice), str(d.get("duration_group", "all")),
                          str(d["id"])))
    return items


def load_vnbench(root: str, annotations: str) -> list[Item]:
    path = os.path.join(root, annotations)
    items = []
    for i, d in enumerate(_read(path)):
        what = f"VNBench item {d.get('question_id', i)} in '{path}'"
        video = str(_field(d, "video", what))
        video = video if os.path.isabs(video) else os.path.join(root, video)
        options = _options(d, "options", what)
        gt = str(_field(d, "gt", what))
        if gt not in options:
            raise DatasetError(f"{what}: the answer gt = {gt!r} is not among the options "
                               f"{options}")
        question = _field(d, "question", what)
        key = str(d["question_id"])[:-2] if "question_id" in d else f"{d['video']}|{question}"
        items.append(Item(str(d.get("question_id", i)), video,
                          f"{question}\n{_letters(options)}\n{INSTRUCTION}",
                          chr(ord("A") + options.index(gt)), str(d.get("type", "all")), key))
    return items


def load_items(bench: str, root: str, annotations: Optional[str] = None,
               limit: int = 0) -> list[Item]:
    """The first ``limit`` items (0: all) of a benchmark, with their video files checked."""
    if limit < 0:
        raise DatasetError(f"limit must be >= 0 (0: all items), got {limit}")
    if not os.path.isdir(root):
        raise DatasetError(f"dataset directory '{root}' not found")
    if bench == "longvideobench":
        items = load_longvideobench(root, annotations or "lvb_val.json")
    elif bench == "vnbench":
        items = load_vnbench(root, annotations or "VNBench-main-4try.json")
    else:
        raise DatasetError(f"unknown benchmark {bench!r} (longvideobench or vnbench)")
    items = items[:limit] if limit else items
    missing = [item for item in items if not os.path.isfile(item.video)]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(items)} items' videos not found, the first: "
                           f"item {missing[0].id}, '{missing[0].video}'")
    return items


def parse_choice(text: str, n_options: int = 5) -> Optional[str]:
    """The option letter a model answered: a standalone capital letter among the options (the
    first one), else None."""
    valid = "".join(chr(ord("A") + i) for i in range(n_options))
    m = re.search(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", text.strip())
    return m.group(1) if m else None


def score(records: Iterable[dict], bench: str) -> dict:
    """Accuracies from result lines (``{"answer", "pred", "group", "question_key"}``).

    longvideobench: per duration group and overall (per item). vnbench: a question is solved
    when every try is right; accuracy per task type, overall = mean over types."""
    records = list(records)
    if bench == "longvideobench":
        by_group = defaultdict(list)
        for r in records:
            by_group[r["group"]].append(r["pred"] == r["answer"])
        groups = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
        overall = sum(r["pred"] == r["answer"] for r in records) / max(1, len(records))
        return {"overall": overall, "groups": groups, "items": len(records)}
    if bench == "vnbench":
        solved = defaultdict(lambda: defaultdict(lambda: True))
        for r in records:
            ok = solved[r["group"]][r["question_key"]]
            solved[r["group"]][r["question_key"]] = ok and r["pred"] == r["answer"]
        groups = {g: sum(q.values()) / len(q) for g, q in sorted(solved.items())}
        overall = sum(groups.values()) / max(1, len(groups))
        return {"overall": overall, "groups": groups, "items": len(records)}
    raise ValueError(f"score: unknown benchmark {bench!r}")


def run_benchmark(items: list[Item], answer: Callable[[Item], str], out_path: str,
                  on_item: Optional[Callable[[int, dict], None]] = None) -> list[dict]:
    """Ask ``answer(item) -> text`` for every item; write and return one record per item."""
    records = []
    with open(out_path, "w") as f:
        for i, item in enumerate(items):
            text = answer(item)
            rec = {**asdict(item), "output": text, "pred": parse_choice(text)}
            records.append(rec)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if on_item is not None:
                on_item(i, rec)
    return records
