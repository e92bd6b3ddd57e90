import subprocess
import sys


def test_demo_runs_end_to_end():
    cmd = [sys.executable, "-m", "spava_ext", "demo", "--world-size", "2", "--frames", "6",
           "--tokens-per-frame", "20", "--heads-q", "4", "--heads-kv", "2", "--head-dim", "16",
           "--repeats", "1", "--passing", "8", "--anchor", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0] + " " + line.split()[1]: line.split() for line in
             res.stdout.splitlines() if line.strip().endswith(("exact", "approximate"))}
    # question rows are exact in every layout; exact mode is exact everywhere
    question = lines["question rows"]
    assert all(float(x) < 1e-5 for x in question[3:6]), res.stdout
    approx = lines["C1.. rows"]
    assert float(approx[5]) < 1e-5 and float(approx[3]) > float(approx[5]), res.stdout


def test_bench_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        return
    res = subprocess.run([sys.executable, "-m", "spava_ext", "bench", "--simulate-world-size", "2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "needs" not in res.stdout
    assert "CUDA GPU" in res.stderr
