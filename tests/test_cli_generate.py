"""`spava generate` end to end: a tiny Qwen2.5-VL saved to disk (weights, tokenizer, processor)
and a synthetic video file written by the test, on 1 process and under torchrun with 2 ranks."""

import os
import subprocess
import sys

import pytest

from utils import _free_port, reference_generate, write_video

transformers = pytest.importorskip("transformers")
av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def assets(tiny_vl_dir, tmp_path_factory):
    video = tmp_path_factory.mktemp("spava_cli") / "clip.mp4"
    write_video(video, frames=12, seed=0)
    return tiny_vl_dir, video


def run(args, nproc=1):
    base = ["-m", "spava_ext", "generate"] + args
    cmd = ([sys.executable] + base if nproc == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(_free_port())] + base)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    answer = [line for line in res.stdout.splitlines() if line.startswith("answer:")]
    assert len(answer) == 1, res.stdout
    return answer[0], res.stdout


def test_generate_cli_spava_equals_dense(assets):
    model_dir, video = assets
    common = ["--model", str(model_dir), "--video", str(video), "--question",
              "what is in the video ?", "--fps", "4", "--max-new-tokens", "6"]
    dense, _ = run(common + ["--attention", "dense"])
    exact, out = run(common + ["--passing-len", "exact", "--anchor-len", "4"])
    assert exact == dense, (exact, dense)
    assert "12 frames" in out and "timing:" in out and "tokens/s" in out
    two, out2 = run(common + ["--passing-len", "exact", "--anchor-len", "4", "--anchor",
                              "replicated"], nproc=2)
    assert two == dense, (two, dense)
    assert "2 rank(s)" in out2 and "anchor sharded" not in out2
    approx, out3 = run(common + ["--passing-len", "2", "--anchor-len", "3"], nproc=2)
    want, layout = _reference_answer(model_dir, video, passing_len=2, world=2, anchor_len=3)
    assert f"layout: {layout!r}" in out3 and "anchor sharded" in out3, out3
    assert approx == want, (approx, want, dense)


def _reference_answer(model_dir, video, passing_len, world, anchor_len):
    """The answer `spava generate --passing-len P --anchor-len A` must print on ``world`` ranks
    (the anchor sharded, the default), from this process (the CLI's device, dtype and prompt;
    reference Spava attention in the prefill)."""
    from spava_ext.integrations.families import video_family_of_dir
    from spava_ext.integrations.multimodal import default_query_len
    from spava_ext.layout import SpavaLayout
    from spava_ext.session import _Session

    ses = _Session(str(model_dir), video_family_of_dir(str(model_dir), "test"))
    inputs, _, _ = ses.inputs(str(video), "what is in the video ?", 4.0, 64)
    ids = inputs["input_ids"]
    layout = SpavaLayout(ids.shape[1], anchor_len, default_query_len(ses.model.config, ids), world,
                         passing_len, shard_anchor=True)
    tokens, gap = reference_generate(ses.model, dict(inputs), layout, 6)
    assert gap > 1e-2  # precondition: no near-ties
    return "answer: " + ses.processor.batch_decode(tokens, skip_special_tokens=True)[0], layout


def test_generate_cli_missing_paths(tmp_path):
    res = subprocess.run([sys.executable, "-m", "spava_ext", "generate", "--model",
                          str(tmp_path / "nope"), "--video", "x.mp4", "--question", "q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "model directory" in res.stderr and "not found" in res.stderr


CLOSE_SCRIPT = """
import os, sys
from spava_ext.integrations.families import video_family_of_dir
from spava_ext.session import _Session

def names():
    out = []
    for t in os.listdir("/proc/self/task"):
        try:
            out.append(open(f"/proc/self/task/{t}/comm").read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return out

ses = _Session(sys.argv[1], video_family_of_dir(sys.argv[1], "test"))
during = [n for n in names() if "gloo" in n]
ses.close()
print(f"gloo threads: {len(during)} before close, {[n for n in names() if 'gloo' in n]} after")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_close_ends_the_process_groups_threads(tiny_vl_dir, tmp_path):
    """After close() no gloo thread is left, although loading the model imported
    torch.distributed.nn: a left thread that releases a tensor during interpreter shutdown
    aborts the process (the flaky exit of `spava generate`)."""
    script = tmp_path / "close.py"
    script.write_text(CLOSE_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), str(script), str(tiny_vl_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("gloo threads:")]
    assert len(lines) == 2 and all(line.endswith("before close, [] after") for line in lines)
    assert all(not line.startswith("gloo threads: 0 ") for line in lines), lines
