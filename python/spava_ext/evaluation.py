"""Evaluation harness for LongVideoBench and VNBench (multiple choice, local files only).

Datasets (as their authors release them):

* LongVideoBench: ``<root>/lvb_val.json`` (a list of ``{"id", "video_path", "question",
  "candidates", "correct_choice", "duration_group", ...}``), videos under ``<root>/videos/``.
* VNBench: a JSON (or JSON-lines) list of ``{"video", "question", "options" (4), "gt" (the
  correct option's text), "type", "try", ...}``; every question comes in 4 tries with shuffled
  options and counts as solved only when all its tries are answered correctly (the authors'
  scoring), accuracy averaged over task types.

``run_benchmark`` asks the model every item (with Spava or dense attention) and writes one JSON
line per item; ``score`` turns such lines into accuracies.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

__all__ = ["Item", "load_longvideobench", "load_vnbench", "parse_choice", "score",
           "run_benchmark"]

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


def _read(path: str) -> list[dict]:
    with open(path) as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def load_longvideobench(root: str, annotations: str = "lvb_val.json") -> list[Item]:
    items = []
    for d in _read(os.path.join(root, annotations)):
        if "correct_choice" not in d:
            raise ValueError(f"LongVideoBench item {d.get('id')} has no correct_choice "
                             "(the test split has no answers)")
        items.append(Item(str(d["id"]), os.path.join(root, "videos", d["video_path"]),
                          f"Question: {d['question']}\n{_letters(d['candidates'])}\n{INSTRUCTION}",
                          chr(ord("A") + int(d["correct_choice"])),
                          str(d.get("duration_group", "all")), str(d["id"])))
    return items


def load_vnbench(root: str, annotations: str) -> list[Item]:
    items = []
    for i, d in enumerate(_read(os.path.join(root, annotations))):
        video = d["video"] if os.path.isabs(d["video"]) else os.path.join(root, d["video"])
        options = list(d["options"])
        key = str(d["question_id"])[:-2] if "question_id" in d else f"{d['video']}|{d['question']}"
        items.append(Item(str(d.get("question_id", i)), video,
                          f"{d['question']}\n{_letters(options)}\n{INSTRUCTION}",
                          chr(ord("A") + options.index(d["gt"])), str(d.get("type", "all")),
                          key))
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
