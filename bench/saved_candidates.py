"""Size of saved first-stage candidates: by id (now) vs by text (before), side by side (issue 12).

`rag-rerank mine` and `rag-rerank eval --save-candidates` write each query's first-stage ranking so
training and evaluation can run without the store. Written as text, every candidate's passage was
copied into every row that names it; by id, a header holds each text once. This runs the user's
command (`rag-rerank mine`, default recipe counts, Kiwi BM25 over an in-memory corpus) on the
KorQuAD part of the shared data - every question of the 100 articles against all their paragraphs -
then writes the same mined data both ways and reports sizes and load times.

    python bench/saved_candidates.py [--data ../shared/data] [--out bench/results/saved_candidates_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from rag_rerank.train.data import load, save_jsonl  # noqa: E402


def korquad_task(data: Path, work: Path) -> tuple[Path, Path, int, int]:
    """questions.jsonl ({query, positive}) and corpus.jsonl (every paragraph) from KorQuAD."""
    raw = json.loads((data / "korquad" / "KorQuAD_v1.0_dev_part.json").read_text(encoding="utf-8"))
    paragraphs = [p for article in raw["data"] for p in article["paragraphs"]]
    questions = [(qa["question"], p["context"]) for p in paragraphs for qa in p["qas"]]
    q_file, c_file = work / "questions.jsonl", work / "corpus.jsonl"
    q_file.write_text("".join(json.dumps({"query": q, "positive": c}, ensure_ascii=False) + "\n" for q, c in questions),
                      encoding="utf-8")
    c_file.write_text("".join(json.dumps({"text": p["context"]}, ensure_ascii=False) + "\n" for p in paragraphs),
                      encoding="utf-8")
    return q_file, c_file, len(questions), len(paragraphs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("RAG_RERANK_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", help="write the results (JSON) here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="saved-candidates-"))
    questions, corpus, n_q, n_p = korquad_task(Path(args.data), work)
    mined = work / "mined.jsonl.gz"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rag_rerank.cli", "mine", "--data", str(questions), "--corpus", str(corpus),
                    "--mode", "bm25", "--output", str(mined)], check=True, capture_output=True, text=True)
    mine_seconds = time.perf_counter() - start
    data = load(mined)
    rows = {}
    for name, by_id in (("by text (before)", False), ("by id (now)", True)):
        for suffix in (".jsonl", ".jsonl.gz"):
            path = work / f"{'id' if by_id else 'text'}{suffix}"
            save_jsonl(data, path, by_id=by_id)
            start = time.perf_counter()
            assert load(path).groups == data.groups  # both forms load to the same data
            rows[f"{name}, {suffix}"] = {"bytes": path.stat().st_size, "load_seconds": time.perf_counter() - start}
    candidates = sum(len(g.candidates) for g in data.groups)
    result = {"machine": f"CPU ({os.cpu_count()} cores, {platform.machine()})", "queries": n_q, "passages": n_p,
              "candidates_per_query": candidates / max(1, len(data.groups)),
              "negatives_per_query": sum(len(g.negatives) for g in data.groups) / max(1, len(data.groups)),
              "mine_seconds": mine_seconds, "files": rows}
    for suffix in (".jsonl", ".jsonl.gz"):
        before, now = rows[f"by text (before), {suffix}"]["bytes"], rows[f"by id (now), {suffix}"]["bytes"]
        result[f"ratio{suffix}"] = before / now
    print(f"KorQuAD: {n_q} queries over {n_p} passages, {result['candidates_per_query']:.1f} candidates and "
          f"{result['negatives_per_query']:.1f} negatives per query ({result['machine']})\n")
    print("| file | size | load (s) |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['bytes'] / 2**20:.2f} MiB | {row['load_seconds']:.2f} |")
    print(f"\nby text / by id: {result['ratio.jsonl']:.1f}x (.jsonl), {result['ratio.jsonl.gz']:.1f}x (.jsonl.gz)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
