"""Start-up cost of the cheap entry points, this tree vs a baseline commit, side by side (issue 12).

`import rag_rerank`, `import rag_rerank.types` and `rag-rerank --help` should not load torch. For
each source tree (this checkout, and a git worktree of ``--baseline``, default the last commit of
session 4), each command runs ``--repeat`` times in a fresh interpreter, interleaved; the table
shows the median wall time and whether torch was loaded.

    python bench/startup.py [--baseline cd7933f] [--repeat 7] [--out bench/results/startup_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "import rag_rerank": "import rag_rerank",
    "import rag_rerank.types": "import rag_rerank.types",
    "rag-rerank --help": ("import sys, runpy; sys.argv = ['rag-rerank', '--help']\n"
                          "try:\n    runpy.run_module('rag_rerank.cli', run_name='__main__')\nexcept SystemExit:\n    pass"),
}
PROBE = "\nimport sys; sys.stderr.write('TORCH=%s' % ('torch' in sys.modules))"


def run(tree: Path, code: str) -> tuple[float, bool]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + PROBE], capture_output=True, text=True, cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {code!r} failed:\n{out.stderr[-2000:]}")
    return seconds, "TORCH=True" in out.stderr


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="cd7933f", help="git revision to compare with")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="startup-baseline-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                   check=True, capture_output=True)
    trees = {f"baseline {args.baseline}": base, "this tree": ROOT}
    try:
        times = {(t, c): [] for t in trees for c in COMMANDS}
        torch = {}
        for _ in range(args.repeat):  # interleaved: the machine's drift hits both trees alike
            for t, tree in trees.items():
                for c, code in COMMANDS.items():
                    seconds, loaded = run(tree, code)
                    times[(t, c)].append(seconds)
                    torch[(t, c)] = loaded
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    machine = f"CPU ({os.cpu_count()} cores, {platform.machine()}), Python {platform.python_version()}"
    print(f"Machine: {machine}; median of {args.repeat} fresh interpreters each\n")
    print("| command | " + " | ".join(trees) + " | ratio |\n|---|" + "---:|" * (len(trees) + 1))
    rows = {}
    for c in COMMANDS:
        med = {t: statistics.median(times[(t, c)]) for t in trees}
        cells = [f"{med[t]:.2f} s{' (torch)' if torch[(t, c)] else ''}" for t in trees]
        first, last = (med[t] for t in trees)
        print(f"| `{c}` | " + " | ".join(cells) + f" | {first / last:.1f}x |")
        rows[c] = {t: {"median_s": med[t], "torch": torch[(t, c)], "runs": times[(t, c)]} for t in trees}
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
