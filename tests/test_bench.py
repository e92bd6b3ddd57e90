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
                   "ttft": "--frames", "decode": "--collective-us", "scale": "--max-run-s",
                   "host": "--prefill-context", "fp8": "--seeds"}


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
    d = parse("--routine", "decode")
    assert (d.model, d.context, d.question, d.world, d.ranks, d.collective_us, d.repeats,
            d.device) == ("qwen2.5-vl-7b", 131072, 64, 8, None, 20.0, 30, "cuda")
    s = parse("--routine", "scale")
    assert (s.contexts, s.world, s.ranks, s.repeats, s.layer_repeats, s.max_run_s) == (
        [131072, 262144, 524288, 1048576], 8, None, 1, 3, 60.0)


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
    (["--routine", "decode", "--collective-us", "fast"], "--collective-us"),
    (["--routine", "scale", "--contexts", "1M"], "--contexts"),
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


def test_decode_runs_on_cpu(monkeypatch, tmp_path):
    """W = 2 over a 512 + 16 token prompt: the ranks' caches hold the prompt exactly once (rank 0
    also the new token); each rank's token time is its step plus the modelled
    gathers (2 layers x 5 us); the dense baseline caches all 529 rows; the summary follows."""
    import torch
    from spava_ext import SpavaLayout
    from spava_ext.decode import SpavaKVCache

    name, data = run_tiny(monkeypatch, tmp_path, ["--routine", "decode", "--context", "512",
                                                  "--collective-us", "5"])
    assert name.startswith("decode_") and (data["layers"], data["world"]) == (2, 2)
    assert data["collective_modelled"] and "modelled" in data["collective_source"]
    layout = SpavaLayout.auto(528, 16, 2)
    held = [SpavaKVCache(layout, r, 1, 1, 1, 1, torch.float32, "cpu", 0).prefill_len
            for r in (0, 1)]
    assert sum(held) == 528
    r0, r1 = data["spava_ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["kv_rows"] == held[0] + 1 and r1["kv_rows"] == held[1]
    for r in (r0, r1):
        assert r["step"]["mode"] == "eager" and min(
            r["step"]["ms"], r["attention_ms"], r["merge_ms"], r["step"]["enqueue_ms"]) > 0
        assert r["collectives_ms"] == pytest.approx(2 * 5e-3)
        assert r["token_ms"] == pytest.approx(r["step"]["ms"] + r["collectives_ms"])
        assert r["linear_other_ms"] == pytest.approx(
            r["step"]["ms"] - r["attention_ms"] - r["merge_ms"])
    dense = data["dense"]
    assert dense["kv_rows"] == 529 and set(dense["kernels"]) == {"sdpa-math", "attn_fwd"}
    assert dense["token_ms"] == min(k["token_ms"] for k in dense["kernels"].values())
    assert dense["token_ms"] == dense["kernels"][dense["best"]]["token_ms"] > 0
    crit = max(data["spava_ranks"], key=lambda r: r["token_ms"])
    assert (data["critical_rank"], data["spava_token_ms"]) == (crit["rank"], crit["token_ms"])
    assert data["spava_tokens_per_s"] == pytest.approx(1e3 / crit["token_ms"])
    assert data["slowdown"] == pytest.approx(crit["token_ms"] / dense["token_ms"] - 1)
    assert data["bar_met"] == (data["slowdown"] <= 0.10)
    sweep = data["slowdown_at_collective_us"]
    assert list(sweep) == ["0", "10", "20", "40"] and sweep["0"] < sweep["40"]
    assert sweep["0"] == pytest.approx(crit["step"]["ms"] / dense["token_ms"] - 1)


@pytest.mark.parametrize("kernel", ["sdpa-math", "attn_fwd"])
def test_dense_decode_baseline_is_attention_over_the_whole_cache(kernel):
    """The dense baseline's attention (GQA, 6 query / 2 kv heads): the new token's K/V lands in
    row L and the output is softmax attention over all L + 1 rows."""
    import torch
    import bench_decode

    torch.manual_seed(0)
    kv = bench_decode.DenseKV(3, 2, 16, 37, torch.float32, torch.device("cpu"))
    kv.backend = bench_decode.CPU_KERNELS[kernel]
    q, k_new, v_new = torch.randn(1, 6, 1, 16), torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)
    out = kv.attend(1, q, k_new, v_new, 0.25)
    assert torch.equal(kv.k[1][:, :, 37:], k_new) and torch.equal(kv.v[1][:, :, 37:], v_new)
    k, v = kv.k[1].repeat_interleave(3, dim=1), kv.v[1].repeat_interleave(3, dim=1)
    ref = torch.softmax(q @ k.transpose(-1, -2) * 0.25, dim=-1) @ v  # [1, 6, 1, 16]
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_scale_runs_on_cpu(monkeypatch, tmp_path):
    """Two sizes at W = 2, every measurement timed (no budget limit)."""
    from spava_ext import SpavaLayout

    name, data = run_tiny(monkeypatch, tmp_path, ["--routine", "scale", "--contexts", "256,512",
                                                  "--layer-repeats", "1", "--max-run-s", "1e6"])
    assert name.startswith("scale_") and (data["ranks"], data["layers"]) == ([0, 1], 2)
    assert data["card_memory_gib"] is None and data["weights_gib"] > 0
    assert [p["context"] for p in data["points"]] == [256, 512]
    for p in data["points"]:
        layout = SpavaLayout.auto(p["context"] + 16, 16, 2)
        assert (p["seq_len"], p["layout"]) == (p["context"] + 16, repr(layout))
        assert p["local_tokens"] == layout.local_len(0)
        for part in ("layer", "e2e"):
            res = p[part]
            timed = [*res["spava"].values(), res["ring_rank0"], res["dense"]]
            assert all(r["status"] == "ok" and r["ms"] > 0 and "peak_gib" not in r
                       for r in timed), res
            assert res["dense_backend"] == "flash"
            crit = res["spava_critical_ms"]
            assert crit == max(r["ms"] for r in res["spava"].values())
            assert res["speedup_vs_ring"] == pytest.approx(res["ring_rank0"]["ms"] / crit)
            assert res["speedup_vs_dense"] == pytest.approx(res["dense"]["ms"] / crit)
        # the layer on both ranks, the prefill on the one whose layer was slower
        layer = p["layer"]["spava"]
        assert set(layer) == {"0", "1"}
        assert list(p["e2e"]["spava"]) == [max(layer, key=lambda r: layer[r]["ms"])]
    assert data["first_oom_context"] == {f"{part} {name}": None for part in ("layer", "e2e")
                                         for name in ("spava", "ring", "dense")}


class _Config:
    num_hidden_layers = 28


class _Model:
    config = _Config()


def test_scale_skips_a_prefill_over_the_budget_and_runs_its_first_layer():
    """100 ms at 1000 tokens: 2000 tokens are estimated at 400 ms a call, 800 ms a run (one
    warm-up, one repeat): over a 0.5 s budget, so one call of one layer runs instead (its ms x 28
    layers is the estimate)."""
    import bench_scale

    model, calls = _Model(), []

    def run_ms(warmup, repeats):
        calls.append((warmup, repeats, model.config.num_hidden_layers))
        return 100.0

    budget = bench_scale.Budget(max_run_s=0.5, calls=2)
    first = bench_scale.prefill(model, "dense", 1000, run_ms, budget, "cpu")
    assert first == {"status": "ok", "ms": 100.0} and calls == [(1, 1, 28)]
    skipped = bench_scale.prefill(model, "dense", 2000, run_ms, budget, "cpu")
    assert calls[1:] == [(0, 1, 1)] and model.config.num_hidden_layers == 28
    assert skipped["status"] == bench_scale.SKIPPED
    assert skipped["budget_estimate_ms"] == pytest.approx(400.0)
    assert skipped["estimated_ms"] == pytest.approx(2800.0)
    assert skipped["one_layer"] == {"status": "ok", "ms": 100.0}
    # the next size is estimated from that estimate (11.2 s a call, 400 ms a layer): with a
    # 0.3 s budget its one layer alone is over it too, and nothing runs
    budget.max_ms = 300.0
    again = bench_scale.prefill(model, "dense", 4000, run_ms, budget, "cpu")
    assert again == {"status": bench_scale.SKIPPED, "budget_estimate_ms": pytest.approx(11200.0)}
    assert len(calls) == 2


def test_scale_records_out_of_memory_and_errors():
    import torch
    import bench_scale

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40 GiB")

    res = bench_scale.guarded(oom, "cpu")
    assert res["status"] == "OOM" and "40 GiB" in res["error"]

    def no_kernel():
        raise RuntimeError("No available kernel. Aborting execution.")

    res = bench_scale.guarded(no_kernel, "cpu")
    assert res["status"] == "error" and "No available kernel" in res["error"]

    def point(context, dense_status):
        ok = {"status": "ok", "ms": 1.0}
        part = {"spava": {"7": ok}, "ring_rank0": ok, "dense": {"status": dense_status}}
        return {"context": context, "layer": part, "e2e": part}

    points = [point(1, "ok"), point(2, "skipped: over time budget; one layer: OOM"),
              point(4, "OOM")]
    first = bench_scale.first_oom(points)
    assert (first["layer dense"], first["e2e dense"], first["e2e ring"]) == (2, 2, None)


def test_plot_draws_a_scale_result(tmp_path):
    pytest.importorskip("matplotlib")
    import plot

    def ok(ms, gib):
        return {"status": "ok", "ms": ms, "peak_gib": gib}

    points = []
    for i, n in enumerate((131072, 262144, 524288)):
        dense = ok(9000.0, 40.0) if i == 0 else (
            {"status": "skipped: over time budget", "estimated_ms": 40000.0,
             "one_layer": ok(1400.0, 60.0)} if i == 1 else
            {"status": "skipped: over time budget; one layer: OOM", "one_layer": {
                "status": "OOM", "peak_gib": 79.0}})
        part = {"spava": {"0": ok(600.0 * 4 ** i, 20.0), "7": ok(610.0 * 4 ** i, 20.0)},
                "ring_rank0": ok(1100.0 * 4 ** i, 22.0), "dense": dense}
        points.append({"context": n, "layer": part, "e2e": part})
    path = tmp_path / "scale_20261207_cpu.json"
    path.write_text(json.dumps({"points": points, "world": 8, "model": "qwen2.5-vl-7b",
                                "card_memory_gib": 79.2, "card": "cpu", "date": "2026-12-07",
                                "commit": "abc1234"}))
    out = plot.plot_file(path)
    assert out == tmp_path / "scale_20261207_cpu.png" and out.read_bytes()[:4] == b"\x89PNG"


def test_host_routine_runs_on_cpu(monkeypatch, tmp_path, capsys):
    """The enqueue measurement of ranks 0 and W-1 on a tiny layer: positive times, the layout
    of the requested context, and a profile that names the schedule's function."""
    monkeypatch.setattr(bench_utils, "RESULTS", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    assert bench.main(["--routine", "host", "--tiny", "--device", "cpu", "--calls", "3",
                       "--world", "4", "--context", "2000"]) == 0
    [path] = tmp_path.glob("host_tiny_*.json")
    r = json.loads(path.read_text())
    assert [e["rank"] for e in r["enqueue"]] == [0, 3] and r["context"] == 2000
    for e in r["enqueue"]:
        assert 0 < e["min_us"] <= e["median_us"]
        assert "L=2064" in e["layout"] or "2064" in e["layout"]
    assert any("spava_attention_rank" in line for line in r["enqueue"][1]["profile_top"])


def test_fp8_routine_runs_on_cpu(monkeypatch, tmp_path):
    """Both input kinds, every method's RMSE positive and the max over the seeds; FP8 above
    bf16."""
    monkeypatch.setattr(bench_utils, "RESULTS", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    assert bench.main(["--routine", "fp8", "--length", "256", "--heads", "4/2", "--seeds",
                       "2", "--frames", "8"]) == 0
    [path] = tmp_path.glob("fp8_accuracy_*.json")
    result = json.loads(path.read_text())
    rows = result["rows"]
    assert [r["inputs"] for r in rows] == ["random", "outliers"]
    for r in rows:
        for name in ("bf16", "fp8", "fp8_rotated"):
            assert r[name] == max(r["per_seed"][name]) > 0
        assert r["fp8"] > r["bf16"]
    spava = result["spava"]  # the exact row classes: FP8's rounding above bf16's
    for rows_class in ("anchor", "C0", "question"):
        assert spava["fp8"][rows_class] > spava["bf16"][rows_class] > 0
    assert 0 <= spava["recall"] <= 1
    src = spava["dense_sources"]
    assert max(src["qk"], src["v"], src["p"]) < src["all"] < src["qk"] + src["v"] + src["p"]
