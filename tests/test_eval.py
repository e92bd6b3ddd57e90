"""The LongVideoBench / VNBench harness: parsing, scoring, and `spava eval` on fixture data."""

import json
import subprocess
import sys

import pytest

from spava_ext import evaluation
from utils import write_video

pytest.importorskip("transformers")
pytest.importorskip("av")


def test_parse_choice():
    assert evaluation.parse_choice("B") == "B"
    assert evaluation.parse_choice(" (C) because ...") == "C"
    assert evaluation.parse_choice("The answer is D.") == "D"
    assert evaluation.parse_choice("no letter here") is None
    assert evaluation.parse_choice("Apple") is None


def test_score_rules():
    lvb = [dict(answer="A", pred="A", group="15", question_key="1"),
           dict(answer="B", pred="C", group="15", question_key="2"),
           dict(answer="C", pred="C", group="600", question_key="3")]
    s = evaluation.score(lvb, "longvideobench")
    assert s["overall"] == pytest.approx(2 / 3) and s["groups"] == {"15": 0.5, "600": 1.0}
    # VNBench: question q1 solved in all 4 tries, q2 fails once; q3 of another type solved
    vn = [dict(answer="A", pred="A", group="ret", question_key="q1") for _ in range(4)]
    vn += [dict(answer="B", pred="B" if t else None, group="ret", question_key="q2")
           for t in range(4)]
    vn += [dict(answer="D", pred="D", group="cnt", question_key="q3") for _ in range(4)]
    s = evaluation.score(vn, "vnbench")
    assert s["groups"] == {"cnt": 1.0, "ret": 0.5} and s["overall"] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "videos").mkdir()
    for i in range(2):
        write_video(root / "videos" / f"v{i}.mp4", frames=8, seed=10 + i)
    lvb = [dict(id=f"lvb{i}", video_path=f"v{i % 2}.mp4", question=f"what is in the video {i} ?",
                candidates=["w1", "w2", "w3", "w4"], correct_choice=i % 4,
                duration_group=15 if i < 2 else 60) for i in range(3)]
    (root / "lvb_val.json").write_text(json.dumps(lvb))
    vn = []
    for q in range(2):
        for t in range(4):
            opts = ["w5", "w6", "w7", "w8"]
            opts = opts[t:] + opts[:t]  # 4 tries, options rotated
            vn.append(dict(video=f"videos/v{q}.mp4", question=f"what is in the video {q} ?",
                           options=opts, gt="w6", type=["ret_insert1", "cnt_insert1"][q],
                           question_id=f"q{q}_{t}", **{"try": t}))
    (root / "vn.json").write_text(json.dumps(vn))
    return root


def run_eval(args):
    res = subprocess.run([sys.executable, "-m", "spava_ext", "eval"] + args, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_eval_cli_end_to_end(tiny_vl_dir, datasets, tmp_path):
    common = ["--model", str(tiny_vl_dir), "--data", str(datasets), "--fps", "4",
              "--max-new-tokens", "2"]
    out_dense, out_spava = tmp_path / "dense.jsonl", tmp_path / "spava.jsonl"
    run_eval(common + ["--bench", "longvideobench", "--attention", "dense", "--out",
                       str(out_dense)])
    printed = run_eval(common + ["--bench", "longvideobench", "--passing-len", "exact",
                                 "--anchor-len", "4", "--out", str(out_spava)])
    dense = [json.loads(line) for line in out_dense.read_text().splitlines()]
    spava = [json.loads(line) for line in out_spava.read_text().splitlines()]
    assert len(spava) == 3 and [r["output"] for r in spava] == [r["output"] for r in dense]
    assert [r["answer"] for r in spava] == ["A", "B", "C"]
    assert '"overall"' in printed
    vn_out = tmp_path / "vn.jsonl"
    printed = run_eval(common + ["--bench", "vnbench", "--annotations", "vn.json", "--out",
                                 str(vn_out), "--passing-len", "2"])
    recs = [json.loads(line) for line in vn_out.read_text().splitlines()]
    assert len(recs) == 8 and {r["question_key"] for r in recs} == {"q0", "q1"}
    assert [r["answer"] for r in recs[:4]] == ["B", "A", "D", "C"]  # gt w6 moves with rotation
    score = json.loads(printed[printed.index("{"): printed.rindex("}") + 1])
    assert set(score["groups"]) == {"cnt_insert1", "ret_insert1"}
