"""Choose the default training recipe on validation data only (issue 6).

For each task prepared by `bench/quality.py prepare`, train one model per candidate recipe
with the user's command (`rag-rerank train --data train.jsonl --candidates train.mined.jsonl.gz`,
one seed), all at once on one GPU, and compare what `rag-rerank train` reports on the
validation part it carves from the train part: the first stage, the fine-tuned reranker, and
the pipeline with the fusion it tuned there. The test part is never read.

Rule, fixed before the run: the winner has the largest mean (over tasks) gain of the fused
pipeline over the first stage on validation, MRR@10. Ties (within 0.002) go to the earlier
recipe in the list.

    python bench/select_recipe.py --work W --tasks kornli,chatbot --seed 1 --budget 520 --train-arg=--epochs=1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from quality import train_args  # noqa: E402

RECIPES = {  # name: `rag-rerank train` arguments on top of the current defaults
    "bce 7 hard + 1 random": ["--loss", "bce", "--set", "num_hard_negatives=7", "--set", "num_random_negatives=1"],
    "bce 1 hard + 7 random": ["--loss", "bce", "--set", "num_hard_negatives=1", "--set", "num_random_negatives=7"],
    "mnrl 7 hard + 1 random": ["--loss", "mnrl", "--set", "num_hard_negatives=7", "--set", "num_random_negatives=1"],
    "mnrl 1 hard + 7 random": ["--loss", "mnrl", "--set", "num_hard_negatives=1", "--set", "num_random_negatives=7"],
    "listwise 7 hard + 1 random": ["--loss", "listwise", "--set", "num_hard_negatives=7",
                                   "--set", "num_random_negatives=1"],
    # issue 13 (korquad passages): a middle mix, and the same at twice the learning rate
    "bce 4 hard + 4 random": ["--loss", "bce", "--set", "num_hard_negatives=4", "--set", "num_random_negatives=4"],
    "bce 4 hard + 4 random at lr 6e-5": ["--loss", "bce", "--set", "num_hard_negatives=4",
                                       "--set", "num_random_negatives=4", "--lr", "6e-5"],
    "bce 15 hard + 1 random": ["--loss", "bce", "--set", "num_hard_negatives=15", "--set", "num_random_negatives=1"],
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def run(work: Path, tasks: list[str], recipes: dict, seed: int, budget: float, smoke: bool,
        common: list[str] = ()) -> dict:
    procs = {}
    for task in tasks:
        for name, extra in recipes.items():
            out = work / task / "select" / _slug(name)
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "rag_rerank.cli", *train_args(work / task, out, seed, smoke), *extra, *common]
            with open(f"{out}.log", "w") as log:  # the child keeps its own descriptor
                procs[(task, name)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                        env={**os.environ, "PYTHONUNBUFFERED": "1"}), out, time.time())
    deadline = time.time() + budget
    results: dict = {}
    for (task, name), (proc, out, started) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        entry = {"returncode": proc.returncode, "seconds": time.time() - started}
        if proc.returncode == 0 and (out / "metrics.json").exists():
            m = json.loads((out / "metrics.json").read_text())
            rows = m.get("validation", {})
            tuning = m.get("fusion") or {}
            entry.update(
                first_stage=next((v["MRR@10"] for k, v in rows.items() if k.startswith("first stage")), None),
                fine_tuned=rows.get("+ fine-tuned", {}).get("MRR@10"),
                pipeline=tuning.get("best_value"), fusion=tuning.get("best"),
                steps=m["train"]["steps"], train_seconds=m["train"]["seconds"])
        results.setdefault(task, {})[name] = entry
    return results


def choose(results: dict, recipes: list[str], tie: float = 0.002) -> tuple[str | None, dict]:
    gains = {}
    for name in recipes:
        per_task = [r[name] for r in results.values()]
        if all(e.get("pipeline") is not None for e in per_task):
            gains[name] = sum(e["pipeline"] - e["first_stage"] for e in per_task) / len(per_task)
    if not gains:
        return None, gains
    best = max(gains.values())
    return next(n for n in recipes if n in gains and gains[n] >= best - tie), gains


def table(results: dict, gains: dict, winner: str | None, seed: int) -> str:
    lines = [f"Validation MRR@10 (seed {seed}; the part `rag-rerank train` carves from the train part)", "",
             "| recipe | task | first stage | fine-tuned | pipeline (tuned fusion) | gain | steps | train (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for task, rows in results.items():
        for name, e in rows.items():
            if e.get("pipeline") is None:
                lines.append(f"| {name} | {task} | unfinished (rc {e['returncode']}, {e['seconds']:.0f}s) | | | | | |")
                continue
            lines.append(f"| {name} | {task} | {e['first_stage']:.4f} | {e['fine_tuned']:.4f} | {e['pipeline']:.4f} | "
                         f"{e['pipeline'] - e['first_stage']:+.4f} | {e['steps']} | {e['train_seconds']:.0f} |")
    lines += ["", "Mean gain over tasks: " + ", ".join(f"{n} {g:+.4f}" for n, g in gains.items()),
              f"Winner by the rule: **{winner or 'none (no recipe finished on every task)'}**"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="the work directory of bench/quality.py prepare")
    p.add_argument("--tasks", default="kornli,chatbot")
    p.add_argument("--recipes", help="comma-separated subset of: " + "; ".join(RECIPES))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget", type=float, default=3600, help="seconds; recipes still training then are stopped")
    p.add_argument("--smoke", action="store_true", help="4 training steps each (CI)")
    p.add_argument("--train-arg", action="append", default=[],
                   help="extra `rag-rerank train` argument for every recipe (e.g. --train-arg=--epochs=1)")
    p.add_argument("--out", help="also write the table here")
    args = p.parse_args(argv)
    work = Path(args.work)
    names = [n.strip() for n in args.recipes.split(",")] if args.recipes else list(RECIPES)
    unknown = set(names) - set(RECIPES)
    if unknown:
        p.error(f"unknown recipe(s) {sorted(unknown)}")
    tasks = [t for t in args.tasks.split(",") if t]
    common = [a for arg in args.train_arg for a in arg.split("=", 1)] if args.train_arg else []
    results = run(work, tasks, {n: RECIPES[n] for n in names}, args.seed, args.budget, args.smoke, common)
    winner, gains = choose(results, names)
    text = table(results, gains, winner, args.seed)
    (work / "selection.json").write_text(json.dumps({"results": results, "gains": gains, "winner": winner,
                                                     "common_train_args": common},
                                                    indent=2, ensure_ascii=False, default=str))
    (work / "selection.md").write_text(text, encoding="utf-8")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
