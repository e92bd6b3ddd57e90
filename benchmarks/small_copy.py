"""What the memory system gives transfers of select_passing's size (CUDA only): device time (CUDA graph of
4 replays, median of 30) of plain torch copies / reads of 16.5 and 25.4 MB, next to the 1 GB
copy rate that the select bar uses."""
import statistics

import torch

def graph_us(fn, n=4):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n): fn()
    g.replay(); torch.cuda.synchronize()
    ts = []
    for _ in range(30):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / n)
    return statistics.median(ts)
MB = 1 << 20
big = torch.empty(1 << 29, dtype=torch.uint8, device="cuda"); big2 = torch.empty_like(big)
t = graph_us(lambda: big2.copy_(big), n=2)
print(f"1 GB copy (read+write 2 GB... counted as 2 x 0.5 GB): {t:.0f} us, {2 * big.numel() / t / 1e3:.0f} GB/s")
for total_mb in (16.5, 25.4):
    n = int(total_mb * MB / 2)  # copy: half read, half written
    srcs = [torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(4)]
    dsts = [torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(4)]
    it = iter(range(1 << 30))
    def cp():
        i = next(it) % 4
        dsts[i].copy_(srcs[i])
    t = graph_us(cp)
    print(f"copy moving {total_mb} MB (read {total_mb/2:.2f} + write {total_mb/2:.2f}): {t:.1f} us, {total_mb * MB / t / 1e3:.0f} GB/s")
# a read of the scored keys: k [1, 18240, 4, 128] bf16, both chunks, all heads (the kernel reads per head, 16.5 MB)
k = [torch.randn(1, 18240, 4, 128, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
out = torch.empty(4, 128, device="cuda")
it2 = iter(range(1 << 30))
def rd():
    i = next(it2) % 4
    torch.sum(k[i][0, 2048:2048 + 16128].view(-1, 512, 128)[:, :, :].float(), dim=0, out=None)
t = graph_us(rd)
print(f"torch read+reduce of the 16.5 MB of scored keys (includes a float copy): {t:.1f} us")
x = [torch.randn(16128 * 4 * 128, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
it3 = iter(range(1 << 30))
def rsum():
    i = next(it3) % 4
    x[i].sum()
t = graph_us(rsum)
print(f"torch sum of 16.5 MB bf16 (read only): {t:.1f} us, {16128*4*128*2 / t / 1e3:.0f} GB/s")
