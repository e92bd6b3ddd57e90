"""benchmarks/bench.py, the one benchmark entry point (CPU): every routine's options parse (and
bad ones are refused, naming the option), result files carry card, date and commit, the
environment helper restores what it changed, and the fidelity routine runs end to end on a
tiny layer with its exact row classes equal to dense causal attention; the e2e and ttft routines
run on tiny models of the published families, whose full shapes are checked by parameter count."""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench
import bench_utils

ROUTINE_OPTIONS = {"kernels": "--unit-overhead", "layer": "--contexts", "e2e": "--layers",
                   "multi-gpu": "--trace-dir", "fidelity": "--tokens-per-frame",
                   "ttft": "--frames"}


def parse(*argv):
    parser, _ = bench.parser_for(list(argv))
    return parser.parse_args(list(argv))


def test_every_routine_is_listed_and_documented():
    assert set(bench.ROUTINES) == set(ROUTINE_OPTIONS)


@pytest.mark.parametrize("routine", sorted(ROUTINE_OPTIONS))
def test_routine_help_lists_its_options(routine, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--routine", routine, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"--routine {routine}:" in out and f"  {ROUTINE_OPTIONS[routine]}" in out


def test_help_without_a_routine_lists_the_routines(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ROUTINE_OPTIONS)


def test_a_routine_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([])
    assert e.value.code == 2 and "--routine" in capsys.readouterr().err


def test_defaults_parse():
    k = parse("--routine", "kernels")
    assert (k.n, k.question, k.world, k.quick, k.heads, k.cool_to, k.unit_overhead,
            k.repeats) == (131072, 64, 8, False, None, None, False, None)
    la = parse("--routine", "layer")
    assert (la.worlds, la.contexts, la.heads, la.head_dim) == (
        [2, 4, 8], [32768, 65536, 131072, 262144], (28, 4), 128)
    e = parse("--routine", "e2e")
    assert (e.model, e.context, e.question, e.world, e.layers, e.repeats, e.device, e.tiny) == (
        "qwen2.5-vl-7b", 131072, 64, 8, None, 2, "cuda", False)
    t = parse("--routine", "ttft")
    assert (t.models, t.frames, t.grid, t.question, t.world, t.repeats, t.link_gbs,
            t.vision_attention, t.device, t.tiny) == (
        ["qwen2.5-vl-7b", "qwen3-vl-8b"], 1024, 32, 64, 8, 3, 450.0, "varlen", "cuda", False)
    import multi_gpu

    m = parse("--routine", "multi-gpu")
    assert m.variants == list(range(len(multi_gpu.VARIANTS)))
    assert (m.skip_speed, m.trace_dir) == (False, None)
    f = parse("--routine", "fidelity")
    assert (f.frames, f.tokens_per_frame, f.world, f.needles) == (64, 64, 4, 24)


def test_options_parse():
    assert parse("--routine", "layer", "--worlds", "8", "--heads", "16/2").heads == (16, 2)
    assert parse("--routine", "kernels", "--heads", "qwen2.5-vl-3b", "--quick").heads == [
        "qwen2.5-vl-3b"]
    assert parse("--routine", "multi-gpu", "--variants", "0,2").variants == [0, 2]
    assert parse("--routine", "e2e", "--model", "qwen3-vl-8b").model == "qwen3-vl-8b"
    assert parse("--routine", "ttft", "--models", "qwen3-vl-8b").models == ["qwen3-vl-8b"]


@pytest.mark.parametrize("argv,option", [
    (["--routine", "layer", "--worlds", "2,x"], "--worlds"),
    (["--routine", "layer", "--heads", "28"], "--heads"),
    (["--routine", "kernels", "--heads", "qwen9"], "--heads"),
    (["--routine", "multi-gpu", "--variants", "7"], "--variants"),
    (["--routine", "fidelity", "--world", "two"], "--world"),
    (["--routine", "fidelity", "--device", "tpu"], "--device"),
    (["--routine", "e2e", "--contexts", "1"], "--contexts"),  # another routine's option
    (["--routine", "e2e", "--model", "qwen9"], "--model"),
    (["--routine", "ttft", "--models", "llava"], "--models"),
    (["--routine", "ttft", "--frames", "many"], "--frames"),
    (["--routine", "sweep"], "--routine"),
])
def test_bad_options_are_refused(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and option in capsys.readouterr().err


def test_environment_sets_unsets_and_restores(monkeypatch):
    monkeypatch.setenv("SPAVA_BENCH_A", "before")
    monkeypatch.delenv("SPAVA_BENCH_B", raising=False)
    with bench_utils.environment(SPAVA_BENCH_A=None, SPAVA_BENCH_B=6):
        assert "SPAVA_BENCH_A" not in os.environ and os.environ["SPAVA_BENCH_B"] == "6"
    assert os.environ["SPAVA_BENCH_A"] == "before" and "SPAVA_BENCH_B" not in os.environ


def test_write_result_records_card_date_commit(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_utils, "RESULTS", tmp_path / "results")
    monkeypatch.setenv("SPAVA_COMMIT", "abc1234")
    monkeypatch.setenv("OUT", str(tmp_path))
    path = bench_utils.write_result("layer", {"points": [1, 2]})
    assert path.parent == tmp_path / "results"
    name, date, card = path.stem.split("_", 2)
    assert (name, len(date), card) == ("layer", 8, bench_utils.card().replace(" ", "_"))
    data = json.loads(path.read_text())
    assert data["commit"] == "abc1234" and data["points"] == [1, 2]
    assert data["date"].startswith(f"{date[:4]}-{date[4:6]}-{date[6:]}")
    assert (tmp_path / path.name).read_text() == path.read_text()  # the copy to $OUT


def test_fidelity_runs_on_cpu(monkeypatch, tmp_path, capsys):
    """The tiny layer: L = a 64-token prefix + 16 frames x 64 tokens + the 32-token question,
    W = 2. Anchor, C0 and question rows are exact (the same attention as dense, up to float32
    rounding); later chunks' rows are approximate, unless passing_len is a whole chunk."""
    monkeypatch.setattr(bench_utils, "RESULTS", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    argv = ["--routine", "fidelity", "--device", "cpu", "--frames", "16", "--tokens-per-frame",
            "64", "--world", "2", "--needles", "4"]
    assert bench.main(argv) == 0
    [path] = tmp_path.glob("fidelity_*.json")
    data = json.loads(path.read_text())
    assert (data["L"], data["world"]) == (64 + 16 * 64 + 32, 2)
    assert len(data["recall"]) == 12 and all(0 <= r["recall"] <= 1 for r in data["recall"])
    for row in data["passing_sweep"] + data["anchor_sweep"]:
        for cls in ("anchor", "C0", "question"):
            assert row[cls] is None or row[cls] < 1e-5, (cls, row)
    sweep = data["passing_sweep"]  # its last passing_len is a whole chunk: exact everywhere
    assert sweep[0]["later_chunks"] > 1e-3 and sweep[-1]["later_chunks"] < 1e-5, sweep
    assert f"wrote {path}" in capsys.readouterr().out


def test_plot_refuses_a_result_it_has_no_plot_for(tmp_path):
    import plot

    path = tmp_path / "e2e_prefill_20261126_cpu.json"
    path.write_text("{}")
    with pytest.raises(SystemExit, match="no plot for e2e_prefill_20261126_cpu.json"):
        plot.plot_file(path)


def test_plot_draws_a_layer_result(tmp_path):
    pytest.importorskip("matplotlib")
    import plot

    point = {"dense_ms": {"cudnn": 40.0}, "zigzag_ring_ms": 8.0, "apb_ms": 4.0, "star_ms": 6.0}
    points = [{"context": n, "world": w, "critical_path_ms": n / 8192 / w, **point}
              for n in (32768, 65536) for w in (2, 4)]
    path = tmp_path / "layer_20261126_cpu.json"
    path.write_text(json.dumps({"points": points, "heads_q": 28, "heads_kv": 4, "head_dim": 128,
                                "card": "cpu", "date": "2026-11-26", "commit": "abc1234"}))
    out = plot.plot_file(path)
    assert out == tmp_path / "layer_20261126_cpu.png" and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name,billions", [("qwen2.5-vl-7b", 8.29), ("qwen3-vl-8b", 8.77)])
def test_published_shapes_have_the_checkpoints_parameter_counts(name, billions):
    """Language model + vision tower, built on the meta device: the checkpoints' published
    totals (Qwen2.5-VL-7B-Instruct 8.29B, Qwen3-VL-8B-Instruct 8.77B parameters)."""
    import bench_e2e
    import bench_ttft

    lm = bench_e2e.language_model(name, device="meta")
    visual = bench_ttft.vision_tower(name, device="meta")
    total = sum(p.numel() for m in (lm, visual) for p in m.parameters())
    assert round(total / 1e9, 2) == billions
    # 1024 frames of 32 x 32 patches: a 128K-token prompt
    cfg = visual.config
    assert 1024 // cfg.temporal_patch_size * (32 // cfg.spatial_merge_size) ** 2 == 131072


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b", "qwen3-vl-8b"])
def test_varlen_vision_attention_equals_the_towers_sdpa(name):
    """The tiny tower with the benchmark's attention (every module sees it) gives the merger's
    and DeepStack outputs of transformers' own SDPA path, on an irregular video (3 temporal
    patches of 6 x 10 patches: Qwen2.5-VL's windows are cut at the frame's edges)."""
    import torch
    import bench_ttft

    torch.manual_seed(0)
    visual = bench_ttft.vision_tower(name, tiny=True, device="cpu")
    with torch.no_grad():  # weights large enough that attention moves the output (std 0.3)
        for p in visual.parameters():
            p.normal_(0, 0.3)
    assert {m.config._attn_implementation for m in visual.modules() if hasattr(m, "config")} == {
        bench_ttft.VARLEN_ATTENTION}
    cfg = visual.config
    grid = torch.tensor([[3, 6, 10]])
    pixels = torch.randn(3 * 6 * 10, 3 * cfg.temporal_patch_size * cfg.patch_size ** 2)
    with torch.no_grad():
        ours = visual(pixels, grid_thw=grid)
        cfg._attn_implementation = "sdpa"
        theirs = visual(pixels, grid_thw=grid)
    assert ours.pooler_output.shape == (3 * 6 * 10 // 4, 64)
    deep = len(getattr(cfg, "deepstack_visual_indexes", None) or [])
    assert len(getattr(ours, "deepstack_features", None) or []) == deep
    for a, b in zip([ours.pooler_output, *(ours.get("deepstack_features") or [])],
                    [theirs.pooler_output, *(theirs.get("deepstack_features") or [])]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_varlen_vision_attention_needs_sequence_bounds():
    import torch
    import bench_ttft

    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match="spava_bench_flash_varlen.*cu_seq_lens_q"):
        bench_ttft.varlen_vision_attention(None, q, q, q)


def run_tiny(monkeypatch, tmp_path, argv: list) -> dict:
    monkeypatch.setattr(bench_utils, "RESULTS", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    assert bench.main(argv + ["--tiny", "--device", "cpu", "--world", "2", "--question", "16",
                              "--repeats", "1"]) == 0
    [path] = tmp_path.glob("*.json")
    return path.name, json.loads(path.read_text())


@pytest.mark.parametrize("anchor", ["sharded", "replicated"])
def test_e2e_runs_on_cpu(monkeypatch, tmp_path, anchor):
    name, data = run_tiny(monkeypatch, tmp_path, ["--routine", "e2e", "--model", "qwen3-vl-8b",
                                                  "--context", "512", "--anchor", anchor])
    prefix = "e2e_prefill_qwen3-vl-8b_" + ("replicated-anchor_" if anchor == "replicated" else "")
    assert name.startswith(prefix) and data["anchor"] == anchor
    assert (data["model"], data["layers"], data["tiny"]) == ("qwen3-vl-8b", 2, True)
    assert "seq_len=528," in data["layout"] and "world_size=2," in data["layout"]
    assert ("anchor sharded" in data["layout"]) == (anchor == "sharded")
    assert len(data["spava_rank_ms"]) == len(data["ring_rank_ms"]) == 2
    assert data["spava_critical_ms"] == max(data["spava_rank_ms"])
    assert list(data["dense_ms"]) == ["flash"] and data["dense_ms"]["flash"] > 0


def test_ttft_runs_on_cpu(monkeypatch, tmp_path):
    """64 frames of 8 x 8 patches: 32 temporal patches of 16 tokens = 512 visual tokens; W = 2
    ranks encode 16 temporal patches each and receive the other's 256 rows."""
    name, data = run_tiny(monkeypatch, tmp_path, ["--routine", "ttft", "--frames", "64",
                                                  "--grid", "8", "--link-gbs", "100"])
    assert name.startswith("ttft_") and set(data["models"]) == {"qwen2.5-vl-7b", "qwen3-vl-8b"}
    for model, res in data["models"].items():
        vis = res["vision"]
        deep = len(res["vision_config"].get("deepstack_visual_indexes", []))
        assert (res["temporal_patches"], res["visual_tokens"], res["prompt_tokens"]) == (
            32, 512, 528)
        assert res["vision_attention"] == "spava_bench_flash_varlen"
        assert vis["temporal_patches_per_rank"] == [16, 16] and vis["gather_width"] == 64 * (
            1 + deep)
        assert vis["gather_bytes_per_rank"] == 256 * 64 * (1 + deep) * 4  # float32 on the CPU
        assert vis["gather_ms"] == pytest.approx(vis["gather_bytes_per_rank"] / 100e9 * 1e3)
        assert res["spava_prefill_ms"] == max(res["spava_prefill_rank_ms"])
        assert res["ttft_spava_ms"] == pytest.approx(
            vis["rank_ms"] + vis["gather_ms"] + res["spava_prefill_ms"])
        assert res["ttft_dense_ms"] == pytest.approx(
            vis["one_gpu_ms"] + res["dense_prefill_ms"]["flash"])
