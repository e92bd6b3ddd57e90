"""The spava command: the demo end to end, and every bad argument a one-line error with exit
status 2 before any model, video or rank process is loaded or started."""

import json
import subprocess
import sys

import pytest
import torch

from spava_ext import cli


def test_demo_runs_end_to_end():
    cmd = [sys.executable, "-m", "spava_ext", "demo", "--world-size", "2", "--frames", "6",
           "--tokens-per-frame", "20", "--heads-q", "4", "--heads-kv", "2", "--head-dim", "16",
           "--repeats", "1", "--passing", "8", "--anchor", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {" ".join(line.split()[:2]): line.split() for line in res.stdout.splitlines()
            if line.endswith(("   exact", "   approximate"))}
    # question rows are exact in every layout; exact mode is exact everywhere
    question = rows["question rows"]
    assert all(float(x) < 1e-5 for x in question[3:6]), res.stdout
    approx = rows["C1.. rows"]
    assert float(approx[5]) < 1e-5 and float(approx[3]) > float(approx[5]), res.stdout
    # the table is explained, with the approximate error it shows, and exact mode is checked
    text = " ".join(res.stdout.split())
    assert f"by design ({float(approx[3]):.0%} at p=8)" in text, res.stdout
    assert "exact-mode check passed: largest relative error" in res.stdout


def test_demo_with_fp8_attention():
    """--attn-dtype fp8: every row carries e4m3 rounding (question rows too), and exact mode
    equals the same arithmetic computed in torch on one process."""
    cmd = [sys.executable, "-m", "spava_ext", "demo", "--world-size", "2", "--frames", "6",
           "--tokens-per-frame", "20", "--heads-q", "4", "--heads-kv", "2", "--head-dim", "16",
           "--repeats", "1", "--passing", "8", "--anchor", "16", "--attn-dtype", "fp8",
           "--hadamard"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {" ".join(line.split()[:2]): line.split() for line in res.stdout.splitlines()
            if line.endswith(("   exact", "   approximate"))}
    assert all(1e-3 < float(x) < 0.5 for x in rows["question rows"][3:6]), res.stdout
    assert "with the Hadamard rotation" in res.stdout
    assert "FP8 exact-mode check passed: relative error" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without GPU")
def test_bench_without_gpu_is_a_clear_error():
    res = subprocess.run([sys.executable, "-m", "spava_ext", "bench", "--simulate-world-size", "2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert "runs the ranks' work on a CUDA GPU; none found" in res.stderr


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "generate" in out and "``" not in out


def test_generate_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--video VIDEO local video file", "--fps FPS frames sampled per second",
                 "--max-frames MAX_FRAMES at most this many frames",
                 "--max-new-tokens MAX_NEW_TOKENS answer tokens at most",
                 "--attention {spava,dense} spava: Spava prefill"):
        assert text in out, text


# ---------------------------------------------------------------------------------- bad arguments
@pytest.fixture
def nothing_loads(monkeypatch):
    """Loading a model, decoding a video or starting the demo's ranks fails the test."""
    from spava_ext import demo, session, video

    def loaded(*args, **kwargs):
        raise AssertionError("a model, a video or rank processes were loaded before the error")

    monkeypatch.setattr(session, "_Session", loaded)
    monkeypatch.setattr(video, "read_video", loaded)
    monkeypatch.setattr(demo, "_demo_inputs", loaded)


def cli_error(argv, capsys) -> str:
    """Run the command in this process; it must exit with status 2. Returns stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    return err


GENERATE = ["generate", "--model", "m", "--video", "v.mp4", "--question", "q"]


@pytest.mark.parametrize("args,message", [
    (["--passing-len", "abc"],
     "argument --passing-len: expected 'auto', 'exact' or an integer >= 1, got 'abc'"),
    (["--passing-len", "0"],
     "argument --passing-len: expected 'auto', 'exact' or an integer >= 1, got '0'"),
    (["--anchor-len", "-3"], "argument --anchor-len: expected 'auto' or an integer >= 0"),
    (["--max-frames", "0"], "argument --max-frames: must be >= 2, got 0"),
    (["--max-frames", "1.5"], "argument --max-frames: expected an integer >= 2, got '1.5'"),
    (["--fps", "-1"], "argument --fps: must be a finite number > 0, got -1"),
    (["--fps", "nan"], "argument --fps: must be a finite number > 0, got nan"),
    (["--fps", "fast"], "argument --fps: expected a number > 0, got 'fast'"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    (["--hadamard"], "--hadamard rotates Q and K before FP8 quantisation: it needs "
                     "--attn-dtype fp8"),
    (["--attn-dtype", "fp8", "--attention", "dense"],
     "--attn-dtype fp8 applies to --attention spava only"),
])
def test_generate_rejects_bad_arguments(args, message, capsys, nothing_loads):
    assert message in cli_error(GENERATE + args, capsys)


@pytest.mark.parametrize("args,message", [
    (["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
    (["--world-size", "0"], "argument --world-size: must be >= 1, got 0"),
    (["--heads-q", "3", "--heads-kv", "2"],
     "--heads-q/--heads-kv: Hq = 3 query heads is not a multiple of Hkv = 2 kv heads"),
    (["--heads-kv", "0"], "argument --heads-kv: must be >= 1, got 0"),
    (["--frames", "2", "--tokens-per-frame", "4", "--anchor", "50"],
     "--anchor 50 exceeds the 40 tokens before the question"),
    (["--hadamard"], "--hadamard rotates Q and K before FP8 quantisation: it needs "
                     "--attn-dtype fp8"),
    (["--attn-dtype", "fp8", "--hadamard", "--head-dim", "80"],
     "--hadamard needs --head-dim a power of two, got 80"),
    (["--attn-dtype", "fp16"], "argument --attn-dtype: invalid choice: 'fp16'"),
])
def test_demo_rejects_bad_arguments(args, message, capsys, nothing_loads):
    assert message in cli_error(["demo"] + args, capsys)


@pytest.mark.parametrize("args,message", [
    (["--heads", "28/3"], "argument --heads: expected query/kv heads like 28/4 (Hq a multiple "
                          "of Hkv), got '28/3'"),
    (["--bandwidth", "450,-5"], "argument --bandwidth: must be a finite number > 0, got -5"),
    (["--simulate-world-size", "0"], "argument --simulate-world-size: must be >= 1, got 0"),
])
def test_bench_rejects_bad_arguments(args, message, capsys):
    assert message in cli_error(["bench", "--simulate-world-size", "2"] + args, capsys)


def _vnbench_item(**fields):
    item = dict(video="v.mp4", question="what ?", options=["a", "b", "c", "d"], gt="b",
                type="count", question_id="q0_0")
    item.update(fields)
    return item


@pytest.mark.parametrize("content,message", [
    (None, "annotation file '{root}/vn.json' not found"),
    ("[{", "annotation file '{root}/vn.json' is not valid JSON: Expecting property name"),
    (json.dumps({"video": "v.mp4"}), "must hold a list of objects"),
    (json.dumps([_vnbench_item(gt="e")]), "VNBench item q0_0 in '{root}/vn.json': the answer "
                                          "gt = 'e' is not among the options ['a', 'b', 'c', 'd']"),
    (json.dumps([_vnbench_item(options="abcd")]), "'options' must be a list of 2 to 26 options"),
    (json.dumps([_vnbench_item(video="gone.mp4")]),
     "1 of 1 items' videos not found, the first: item q0_0, '{root}/gone.mp4'"),
    (json.dumps([{k: v for k, v in _vnbench_item().items() if k != "question"}]),
     "VNBench item q0_0 in '{root}/vn.json' has no field 'question'"),
])
def test_eval_rejects_bad_annotations(content, message, tmp_path, capsys, nothing_loads):
    (tmp_path / "v.mp4").write_bytes(b"")
    if content is not None:
        (tmp_path / "vn.json").write_text(content)
    err = cli_error(["eval", "--bench", "vnbench", "--data", str(tmp_path), "--annotations",
                     "vn.json", "--model", str(tmp_path)], capsys)
    assert message.format(root=tmp_path) in err, err


def test_eval_rejects_a_correct_choice_out_of_range(tmp_path, capsys, nothing_loads):
    item = dict(id="x1", video_path="v.mp4", question="q", candidates=["a", "b"],
                correct_choice=2)
    (tmp_path / "lvb_val.json").write_text(json.dumps([item]))
    err = cli_error(["eval", "--bench", "longvideobench", "--data", str(tmp_path), "--model",
                     str(tmp_path)], capsys)
    assert "LongVideoBench item x1" in err and "correct_choice 2 is not an option index in " \
                                                "[0, 2)" in err


@pytest.mark.parametrize("args,message", [
    (["--limit", "-1"], "argument --limit: must be >= 0, got -1"),
    (["--data", "/nonexistent/spava"], "dataset directory '/nonexistent/spava' not found"),
])
def test_eval_rejects_bad_arguments(args, message, tmp_path, capsys, nothing_loads):
    base = ["eval", "--bench", "vnbench", "--data", str(tmp_path), "--model", str(tmp_path)]
    assert message in cli_error(base + args, capsys)


def test_errors_are_one_line_without_traceback(tmp_path):
    """The same errors from a real process: exit status 2, one error line, no traceback."""
    (tmp_path / "vn.json").write_text("[{")
    for argv in (["demo", "--heads-q", "3", "--heads-kv", "2"],
                 ["eval", "--bench", "vnbench", "--data", str(tmp_path), "--annotations",
                  "vn.json", "--model", str(tmp_path)]):
        res = subprocess.run([sys.executable, "-m", "spava_ext"] + argv, capture_output=True,
                             text=True, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "error:" in lines[0], res.stderr
