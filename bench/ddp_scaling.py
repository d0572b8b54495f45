"""Multi-GPU scaling of `rag-rerank train` (issue 5): the same command on 1 GPU and under torchrun.

    python bench/ddp_scaling.py --data ../shared/data --gpus 1,2 --out bench-out

Builds the bongsoo-shaped ALBERT cross-encoder (random weights, tokenizer trained on the data,
as in train_speed.py), writes KorNLI + KorSTS pairs to a JSONL file, then runs

    python -m rag_rerank.cli train --data pairs.jsonl --base MODEL --preset fast ...           (1 GPU)
    torchrun --nproc_per_node N -m rag_rerank.cli train --data pairs.jsonl --base MODEL ...    (N GPUs)

and reads each run's metrics.json (rank 0 writes it). Per-device batch stays 256, so N GPUs
train with an effective batch of 256 x N: the table reports pairs/s and the speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_speed import BONGSOO_SHAPE, load_pairs  # noqa: E402

from rag_rerank.testing import tiny_albert_cross_encoder  # noqa: E402


def run(gpus: int, data: Path, model: Path, out: Path, epochs: float, logs: Path) -> dict:
    train = ["-m", "rag_rerank.cli", "train", "--data", str(data), "--base", str(model), "--preset", "fast",
             "--epochs", str(epochs), "--output", str(out), "--max-length", "512", "--set", "show_progress=false",
             "--set", "validation_fraction=0.05"]
    cmd = ([sys.executable, *train] if gpus == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *train])
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"CUDA_VISIBLE_DEVICES": "0"} if gpus == 1 else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    (logs / f"log-{gpus}gpu.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{gpus} GPU run failed:\n{proc.stderr[-3000:]}")
    t = json.loads((out / "metrics.json").read_text())["train"]
    return {"gpus": gpus, "pairs_per_s": t["pairs_per_second"], "train_seconds": t["seconds"], "steps": t["steps"],
            "wall_seconds": wall, "peak_gib_rank0": t["peak_memory_bytes"] / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ddp-"))
    pairs = load_pairs(Path(args.data))
    data = work / "pairs.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"query": p.query, "document": p.document, "label": p.label}, ensure_ascii=False) + "\n")
    model = tiny_albert_cross_encoder(work / "albert", [p.query for p in pairs] + [p.document for p in pairs],
                                      vocab_size=32000, **BONGSOO_SHAPE)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    rows = [run(int(n), data, model, work / f"run-{n}", args.epochs, out) for n in args.gpus.split(",")]
    base = rows[0]["pairs_per_s"]
    lines = [f"Device: {torch.cuda.device_count()} x {device}. {len(pairs)} Korean pairs, `fast` preset "
             f"(per-device batch 256, bf16), {args.epochs:g} epochs, max_length 512.", "",
             "| GPUs | effective batch | pairs/s | speed-up | steps | train s | peak GiB (rank 0) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['gpus']} | {256 * r['gpus']} | {r['pairs_per_s']:.0f} | {r['pairs_per_s'] / base:.2f}x | "
                     f"{r['steps']} | {r['train_seconds']:.1f} | {r['peak_gib_rank0']:.2f} |")
    table = "\n".join(lines)
    print(table)
    (out / "ddp.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    (out / "ddp.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
