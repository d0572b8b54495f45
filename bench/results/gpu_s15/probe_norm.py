"""Session 15 probe (one NVIDIA H200): the fused residual add + LayerNorm kernel (rag_rerank.add_norm)
against eager add + torch LayerNorm: correctness in fp16/bf16, time per call for a few rows-per-program
values at a big pass's token count (32k) and a 1 x 50 piece's (6k), hidden 384."""
import sys

import torch
import triton

from rag_rerank import add_norm

print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())
dev = "cuda"


def timed(fn, n=200):
    for _ in range(10):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n * 1000  # us


run = add_norm.kernel()
for dtype in (torch.float16, torch.bfloat16):
    norm = torch.nn.LayerNorm(384).to(dev, dtype)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
    for rows in (1, 3, 5, 6027, 32768, 65536):
        x = torch.randn(1, rows, 384, device=dev, dtype=dtype) * 4
        r = torch.randn(1, rows, 384, device=dev, dtype=dtype)
        want, got = norm(x + r).float(), run(x, r, norm).float()
        ulp = torch.finfo(dtype).eps
        bad = ((got - want).abs() > ulp * want.abs().clamp(min=1)).sum().item()
        print(f"{dtype} rows {rows}: max |diff| {(got - want).abs().max().item():.2e}, beyond one unit: {bad}")

norm = torch.nn.LayerNorm(384).to(dev, torch.float16)
for tokens in (32768, 6027):
    x = torch.randn(1, tokens, 384, device=dev, dtype=torch.float16)
    r = torch.randn(1, tokens, 384, device=dev, dtype=torch.float16)
    eager = timed(lambda: norm(x + r))
    line = [f"tokens {tokens}: eager add+LayerNorm {eager:.1f} us"]
    for rows in (1, 2, 4, 8, 16):
        add_norm._ROWS = rows
        line.append(f"ROWS {rows} {timed(lambda: run(x, r, norm)):.1f}")
    add_norm._ROWS = 4
    ln_only = timed(lambda: norm(x))
    line.append(f"(LayerNorm alone {ln_only:.1f}, add alone {timed(lambda: x + r):.1f})")
    print(", ".join(line))
    mb = 3 * tokens * 384 * 2 / 1e6
    print(f"  bytes moved by the fused kernel: {mb:.1f} MB")
sys.stdout.flush()
