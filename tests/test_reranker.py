"""The cross-encoder Reranker: ordering, long documents, threads, batching, bad input."""
from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from rag_rerank import RankedDoc, Reranker
from rag_rerank.models.devices import resolve_device, resolve_dtype
from rag_rerank.models import ModelNotFoundError


@pytest.fixture(scope="module")
def tiny(tiny_ce):
    return Reranker(str(tiny_ce), batch_size=4)


# ------------------------------------------------------------------ quality
def test_relevant_korean_passage_outranks_unrelated(e5_reranker, kornli):
    pairs, premises = kornli["test"]  # the model was fine-tuned on dev: disjoint premises
    rng = random.Random(1)
    hits = 0
    sample = rng.sample(pairs, 40)
    for hyp, prem in sample:
        docs = rng.sample([p for p in premises if p != prem], 4)
        docs.insert(rng.randrange(5), prem)
        top = e5_reranker.rerank(hyp, docs, top_n=1)[0]
        hits += top.text == prem
    print(f"top-1 among 5 (chance 0.2): {hits / len(sample):.2f}")
    assert hits / len(sample) >= 0.7


def test_answer_beyond_max_length_is_found(e5_cross_encoder, kornli):
    pairs, premises = kornli["test"]
    reranker = Reranker(str(e5_cross_encoder), max_length=64)
    rng = random.Random(2)
    found = first_only = 0
    for hyp, prem in rng.sample(pairs, 10):
        filler = " ".join(rng.sample([p for p in premises if p != prem], 12))
        long_doc = filler + " " + prem  # the answer sits far past 64 tokens
        distractors = rng.sample([p for p in premises if p != prem], 4)
        ranked = reranker.rerank(hyp, [long_doc] + distractors)
        found += ranked[0].index == 0
        cut = Reranker.__new__(Reranker)
        cut.__dict__.update(reranker.__dict__, aggregate="first")  # what silent truncation would do
        first_only += cut.rerank(hyp, [long_doc] + distractors)[0].index == 0
    print(f"long doc ranked first: windows {found}/10, first window only {first_only}/10")
    assert found >= 8 and found > first_only


def windows(reranker, query, docs):
    """(doc index, input ids) of every window of one query's documents."""
    w = reranker._pairs.windows([(0, 0, query, docs)])
    return [(doc, list(reranker._pairs.ids(w, k))) for k, (_, doc) in enumerate(w.owners)]


def test_windows_cover_the_whole_document(tiny):
    doc = "가나다라마바사 " * 400
    found = windows(tiny, "질문", [doc, "짧은 문서"])
    owners = [d for d, _ in found]
    assert owners.count(0) > 3 and owners.count(1) == 1
    assert all(len(ids) <= tiny.max_length for _, ids in found)
    tok = tiny.tokenizer
    full = tok(doc, add_special_tokens=False)["input_ids"]
    covered = []  # the document's tokens, window after window, each repeating the last `stride` of the one before
    for d, ids in found:
        if d == 0:
            sep = [i for i, t in enumerate(ids) if t == tok.sep_token_id]
            part = [int(t) for t in ids[sep[0] + 1 : sep[-1]]]
            if covered:
                assert part[: tiny._pairs.stride] == covered[-tiny._pairs.stride :]
                part = part[tiny._pairs.stride :]
            covered += part
    assert covered == full  # every token, in order, none lost between windows


@pytest.mark.parametrize("fixture", ["tiny_ce", "e5_cross_encoder"])  # ALBERT's template (token types), XLM-R's
def test_pairs_are_the_tokenizers_own_encoding(fixture, request, korean_sentences):
    """Assembled from separately encoded queries and documents, a pair's ids (and token types) are
    what the tokenizer gives for the pair; a long document's first window is its truncated pair."""
    r = Reranker(str(request.getfixturevalue(fixture)), max_length=48)
    tok = r.tokenizer
    docs = korean_sentences[:6] + [" ".join(korean_sentences[:12])]
    w = r._pairs.windows([(0, 0, "서울의 날씨는?", docs)])
    batch = r._pairs.pad(w, list(range(len(w))))
    first = {}
    for k, (_, doc) in enumerate(w.owners):
        first.setdefault(doc, k)
    for doc, k in first.items():
        want = tok("서울의 날씨는?", docs[doc], truncation="only_second", max_length=48)
        n = len(want["input_ids"])
        assert list(batch["input_ids"][k, :n]) == want["input_ids"] and batch["attention_mask"][k].sum() == n
        if "token_type_ids" in want:
            assert list(batch["token_type_ids"][k, :n]) == want["token_type_ids"]
    assert w.owners.count((0, len(docs) - 1)) > 1  # the long document has more windows


def test_tokenizing_on_our_threads_when_the_tokenizers_are_off(e5_cross_encoder, korean_sentences, monkeypatch):
    """With TOKENIZERS_PARALLELISM=false (set by users, frameworks, and by tokenizers itself in a forked
    process) one call's passages are cut into slices encoded on the package's threads: the ids are exactly
    one call's, the scores the same, and short calls stay one call."""
    from rag_rerank import pairs

    r = Reranker(str(e5_cross_encoder), max_length=128)
    docs = [" ".join(korean_sentences[i : i + 5]) for i in range(0, 60, 3)]
    query = "한국의 수도는 어디인가?"
    reference = r.score(query, docs)
    want = [e.ids for e in r._pairs.backend.encode_batch_fast(docs, add_special_tokens=False)]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setattr(pairs, "PARALLEL_MIN_CHARS", 100)
    monkeypatch.setattr(pairs.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)  # 4 cores
    calls = []
    real = r._pairs.backend.encode_batch_fast

    class Spy:  # the Rust tokenizer, counting its calls and their threads
        def __getattr__(self, name):
            return getattr(r._pairs.backend_real, name)

        def encode_batch_fast(self, texts, add_special_tokens):
            import threading

            calls.append((len(texts), threading.current_thread().name))
            return real(texts, add_special_tokens=add_special_tokens)

    r._pairs.backend_real, r._pairs.backend = r._pairs.backend, Spy()
    assert [list(x) for x in r._pairs.encode(docs)] == want
    assert pairs.tokenizer_threads() == 4 and len(calls) == 4 and sum(n for n, _ in calls) == len(docs)
    assert all(name.startswith("rag-rerank-tokenizer") for _, name in calls)
    r.token_cache.clear()
    np.testing.assert_allclose(r.score(query, docs), reference, rtol=1e-5, atol=1e-5)
    calls.clear()
    r._pairs.encode(["짧은 문장", "또 하나"])  # under PARALLEL_MIN_CHARS: one call, this thread
    assert len(calls) == 1 and not calls[0][1].startswith("rag-rerank-tokenizer")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the tokenizer's own threads: one call
    assert pairs.tokenizer_threads() == 0
    calls.clear()
    r._pairs.encode(docs)
    assert len(calls) == 1


def _wordpiece_tokenizer(texts):
    """A BERT-style fast tokenizer (BertNormalizer, BertPreTokenizer, WordPiece) trained on ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["[PAD]", "[UNK]", "[CLS]",
                                                                                             "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


@pytest.mark.parametrize("fixture", ["tiny_ce", "e5_cross_encoder", "wordpiece"])
def test_long_documents_are_cut_for_the_tokenizers_threads_and_encode_as_a_whole(fixture, request, korean_sentences):
    """Cut before single spaces between letters or digits, a long text's parts encode to exactly its ids (the
    twin's whitespace rules, zero-width and ideographic spaces, newlines and tabs beside the cuts included),
    for Metaspace unigram (ALBERT, XLM-R / e5) and BERT WordPiece tokenizers."""
    from transformers import AutoTokenizer

    from rag_rerank.reranker.pairs import PairEncoder, _cut_points

    tok = (_wordpiece_tokenizer(korean_sentences) if fixture == "wordpiece"
           else AutoTokenizer.from_pretrained(str(request.getfixturevalue(fixture))))
    pairs = PairEncoder(tok, 64, 0.5, 0.25)
    assert pairs.cut_chars == PairEncoder.CUT_CHARS
    seps = [" ", "  ", "\n", " \t ", " \u200b", "\u200b ", "\u3000", ", ", " - ", "\u00a0", " 2019 "]
    texts = ["".join(s + seps[(i + j) % len(seps)] for j, s in enumerate(korean_sentences[i : i + 60]))
             for i in range(0, 300, 30)] + korean_sentences[:5]
    cut = [t for t in texts if _cut_points(t, pairs.cut_chars)]
    assert len(cut) >= 8
    assert [ids.tolist() for ids in pairs.encode(texts)] == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_cut_points_are_single_spaces_between_letters_or_digits():
    from rag_rerank.reranker.pairs import _cut_points

    text = "가나다 " * 200 + "끝"
    cuts = _cut_points(text, 100)
    assert cuts and all(text[k] == " " and text[k - 1].isalnum() and text[k + 1].isalnum() for k in cuts)
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert min(parts) >= 50 and max(parts[:-1]) <= 104 and parts[-1] <= 204  # the last part up to 2 x size
    assert _cut_points("가나다 " * 20, 100) == []  # short: whole
    assert _cut_points("가" * 1000, 100) == []  # no space: whole
    assert _cut_points("가 \u200b" * 300, 100) == []  # no space between two letters: whole


def test_tokenizers_whose_parts_may_differ_from_their_whole_are_never_cut():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from rag_rerank.reranker.pairs import _cuts_exactly

    def tok(pre, norm=None):
        t = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
        t.pre_tokenizer = pre
        if norm is not None:
            t.normalizer = norm
        return t

    assert _cuts_exactly(tok(pre_tokenizers.Metaspace()))
    assert _cuts_exactly(tok(pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits()])))
    assert _cuts_exactly(tok(pre_tokenizers.Whitespace(), normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex("[\t\n]"), " "), normalizers.Replace(Regex(" {2,}"), " ")])))
    assert not _cuts_exactly(tok(None))
    assert not _cuts_exactly(tok(pre_tokenizers.Metaspace(split=False)))  # one piece: the model sees across spaces
    assert not _cuts_exactly(tok(pre_tokenizers.ByteLevel()))
    assert not _cuts_exactly(tok(pre_tokenizers.Sequence([pre_tokenizers.Digits()])))  # no split at spaces
    assert not _cuts_exactly(tok(pre_tokenizers.Metaspace(), normalizers.Strip()))  # strips a part's leading space
    assert not _cuts_exactly(tok(pre_tokenizers.Metaspace(), normalizers.Prepend("\u2581")))
    assert not _cuts_exactly(tok(pre_tokenizers.Whitespace(), normalizers.Replace("a b", "c")))  # spans a space
    for pattern, content in (("[^a]", " "), ("[a-z]", ""), ("[\\s]", ""), ("[ ]", ""), ("[a]", " ")):
        # negated classes, ranges and categories are not read; a class of letters, digits or the space moves a cut
        assert not _cuts_exactly(tok(pre_tokenizers.Whitespace(), normalizers.Replace(Regex(pattern), content))), pattern
    assert _cuts_exactly(tok(pre_tokenizers.Metaspace(), normalizers.Replace(Regex("[\\x{9}\\x{200b}]"), " ")))
    assert _cuts_exactly(tok(pre_tokenizers.BertPreTokenizer(), normalizers.BertNormalizer()))
    # its spaces around CJK characters would meet the cut's space where spaces are kept as "▁"
    assert not _cuts_exactly(tok(pre_tokenizers.Metaspace(), normalizers.BertNormalizer()))
    assert _cuts_exactly(tok(pre_tokenizers.Metaspace(), normalizers.BertNormalizer(handle_chinese_chars=False)))


def test_token_cache_is_bounded_and_drops_the_least_recently_used_first():
    from rag_rerank.reranker.pairs import TokenCache

    ids = lambda n: np.arange(n, dtype=np.int32)  # noqa: E731
    cache = TokenCache(10)
    cache.put(["a", "b"], [ids(4), ids(4)])
    assert cache.missing(["a", "b", "c", "c"]) == 1 and cache.tokens == 8
    assert [x is not None for x in cache.get(["a", "z"])] == [True, False]  # "a" is now the most recent
    cache.put(["c"], [ids(4)])  # 12 > 10: "b", the least recently used, goes
    assert cache.get(["b"]) == [None] and len(cache) == 2 and cache.tokens == 8
    cache.put(["huge"], [ids(11)])  # longer than the whole cache: not kept, nothing dropped for it
    assert len(cache) == 2 and cache.get(["huge"]) == [None]
    cache.put(["a"], [ids(1)])  # a text held already keeps its ids (they are the tokenizer's, whoever asks)
    assert len(cache.get(["a"])[0]) == 4
    with pytest.raises(ValueError):  # held ids are shared by every call and thread: read-only
        cache.get(["a"])[0][0] = 7
    cache.clear()
    assert len(cache) == 0 and cache.tokens == 0
    off = TokenCache(0)
    off.put(["a"], [ids(1)])
    assert len(off) == 0
    with pytest.raises(ValueError, match="max_tokens"):
        TokenCache(-1)


def test_documents_seen_before_are_not_tokenised_again_and_score_alike(tiny_ce, korean_sentences, monkeypatch):
    """The second call tokenises its query only; its windows (a long document's too) and scores are the
    uncached reranker's."""
    docs = korean_sentences[:8] + [" ".join(korean_sentences[:12])]  # the last one has several windows
    r = Reranker(str(tiny_ce), batch_size=4, max_length=48)
    none = Reranker(str(tiny_ce), batch_size=4, max_length=48, cache_tokens=0)
    r.score("서울의 날씨는?", docs)
    assert len(r.token_cache) == len(docs) and len(none.token_cache) == 0
    tokenised, encode = [], r._pairs.encode
    monkeypatch.setattr(r._pairs, "encode", lambda texts: tokenised.append(list(texts)) or encode(texts))
    assert windows(r, "부산의 인구는?", docs) == windows(none, "부산의 인구는?", docs)
    assert r.score("부산의 인구는?", docs, raw=True) == pytest.approx(none.score("부산의 인구는?", docs, raw=True), abs=1e-6)
    assert tokenised == [["부산의 인구는?"]] * 2
    r.token_cache.clear()
    r.score("부산의 인구는?", docs[:2])
    assert tokenised[-1] == ["부산의 인구는?", *docs[:2]]
    with pytest.raises(ValueError, match="cache_tokens"):
        Reranker(str(tiny_ce), cache_tokens=-1)


@pytest.mark.parametrize("aggregate", ["max", "mean", "first"])
def test_aggregate_modes(tiny_ce, aggregate):
    r = Reranker(str(tiny_ce), max_length=32, aggregate=aggregate)
    doc = "서울 부산 대구 인천 광주 대전 울산 " * 20
    logits = r._forward(r._pairs.windows([(0, 0, "도시", [doc])]))
    expected = {"max": max(logits), "mean": sum(logits) / len(logits), "first": logits[0]}[aggregate]
    assert r.score("도시", [doc], raw=True)[0] == pytest.approx(expected)


# ----------------------------------------------------------------- batching
def test_length_sorted_batches_restore_input_order(tiny_ce, korean_sentences):
    docs = korean_sentences[:37] + ["짧다", "가" * 300]
    one = Reranker(str(tiny_ce), batch_size=1)
    many = Reranker(str(tiny_ce), batch_size=16)
    expected = [one.score("서울의 날씨", [d])[0] for d in docs]
    assert many.score("서울의 날씨", docs) == pytest.approx(expected, abs=1e-5)
    perm = list(range(len(docs)))
    random.Random(0).shuffle(perm)
    shuffled = many.score("서울의 날씨", [docs[i] for i in perm])
    assert shuffled == pytest.approx([expected[i] for i in perm], abs=1e-5)


def test_padded_batches_are_length_sorted_and_fill_a_token_budget(tiny_ce, korean_sentences):
    small = Reranker(str(tiny_ce), batch_size=4, max_length=64, pack=False)  # 256 tokens a pass, padded
    docs = [s * (1 + i % 5) for i, s in enumerate(korean_sentences[:40])]
    lengths = [len(ids) for _, ids in windows(small, "질문", docs)]
    batches = small.engine.plan(lengths)
    assert small.engine.describe()["engine"] == "padded"
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every pair once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)  # longest first: each pass pads to its first pair
    assert all(len(b) * lengths[b[0]] <= 256 for b in batches)
    assert len(batches[0]) == 4 and len(batches[-1]) > 4  # full-length pairs 4 a pass, short ones more
    padding = sum(len(b) * lengths[b[0]] for b in batches) - sum(lengths)
    unsorted = sum(max(lengths[s:s + 4]) * len(lengths[s:s + 4]) for s in range(0, len(lengths), 4)) - sum(lengths)
    assert padding < unsorted / 2


def test_chunks_tokenised_in_the_background_score_like_one_chunk(tiny_ce, korean_sentences):
    """A call larger than CHUNK_PAIRS is tokenised chunk by chunk in a worker thread while the model
    scores the previous chunk; a group may span chunks. The scores are the same as in one chunk."""
    queries = ["날씨", "음식 추천", "교통", "여행"]
    docs = [korean_sentences[:7], korean_sentences[7:9], [], korean_sentences[9:20] + ["가" * 300]]
    whole = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    chunked = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    chunked.CHUNK_PAIRS = 3
    got, want = chunked.score_many(queries, docs, raw=True), whole.score_many(queries, docs, raw=True)
    assert [len(g) for g in got] == [7, 2, 0, 12]
    assert [x for g in got for x in g] == pytest.approx([x for g in want for x in g], abs=1e-5)
    assert chunked._tokenizing is not None and whole._tokenizing is None
    sizes = [sum(len(part) for *_, part in chunk) for chunk in chunked._chunks(list(zip(queries, docs)))]
    assert sizes == [1] + [3] * 6 + [2]  # the first chunk a quarter (rounded up to 1): the device starts sooner


def test_every_chunk_is_queued_before_the_host_waits_for_logits(tiny_ce, korean_sentences, monkeypatch):
    """The host waits for the device once a call: each chunk's passes are launched as soon as it is
    tokenised, and logits come back only after the last chunk is queued (a wait per chunk would leave
    the device idle while the host packs the next chunk)."""
    r = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    r.CHUNK_PAIRS = 4
    events, launch, collect = [], r._launch, r._collect
    monkeypatch.setattr(r, "_launch", lambda w: events.append("launch") or launch(w))
    monkeypatch.setattr(r, "_collect", lambda *a: events.append("collect") or collect(*a))
    got = r.score("질문", korean_sentences[:10], raw=True)
    chunks = len(r._chunks([("질문", korean_sentences[:10])]))
    assert chunks > 2 and events == ["launch"] * chunks + ["collect"] * chunks
    whole = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    assert got == pytest.approx(whole.score("질문", korean_sentences[:10], raw=True), abs=1e-5)


def test_small_calls_are_split_in_pieces_on_an_accelerator_and_score_alike(tiny_ce, korean_sentences):
    """On a GPU replaying CUDA graphs a call of a few dozen pairs is three chunks (each tokenised while the device
    runs the one before), two below 24 documents to tokenise (8 a piece at least); on the CPU one. Documents
    whose ids the cache holds need no hiding. Large calls keep their quarter-size first chunk, tiny ones
    stay whole. The split changes no score."""
    docs = [s * (1 + i % 3) for i, s in enumerate(korean_sentences[:20])] * 2 + korean_sentences[:10]  # 50
    whole = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    split = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    assert whole._split_small_calls is False  # CPU: the pieces would share the same cores
    split._split_small_calls = True  # what a CUDA device replaying graphs of packed passes sets
    sizes = lambda r, groups: [sum(len(part) for *_, part in c) for c in r._chunks(groups)]  # noqa: E731
    assert sizes(whole, [("q", docs)]) == [50]
    assert sizes(split, [("q", docs)]) == [17, 17, 16]
    assert sizes(split, [("q", docs[:20])]) == [10, 10]  # three pieces would be under 8 pairs
    assert sizes(split, [("q", docs[:15])]) == [15]  # below SPLIT_MIN_PAIRS: one more pass costs more
    other = [s + " 더" for s in korean_sentences[:30]]
    assert sizes(split, [("a", other), ("b", other)]) == [20, 20, 20]  # pieces cross groups
    assert sizes(split, [("a", docs[:30]), ("b", docs[:30])]) == [30, 30]  # counted in distinct documents: 20
    assert sizes(split, [("a", docs), ("b", docs)] * 20) == [512, 1488]  # large: a quarter first, as before
    assert split.score("질문", docs, raw=True) == pytest.approx(whole.score("질문", docs, raw=True), abs=1e-5)
    assert split._tokenizing is not None and whole._tokenizing is None
    # every document's ids known: nothing to tokenise behind the device, one piece
    assert sizes(split, [("다른 질문", docs)]) == [50]
    assert sizes(split, [("다른 질문", docs[:10] + other[:20])]) == [15, 15]  # 20 to tokenise: two pieces
    split.token_cache.clear()
    assert sizes(split, [("q", docs)]) == [17, 17, 16]


def test_compiled_model_scores_like_eager(tiny_ce, korean_sentences):
    """compile= wraps the model in torch.compile(dynamic=True); traced by dynamo ("eager": no C++
    toolchain or minutes of inductor on CI), varying pass shapes score as the plain module does."""
    plain = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    compiled = Reranker(str(tiny_ce), batch_size=4, max_length=64, compile="eager")
    assert compiled.model is not plain.model and hasattr(compiled.model, "_orig_mod")
    docs = [s * (1 + i % 3) for i, s in enumerate(korean_sentences[:12])]
    assert compiled.score("서울", docs, raw=True) == pytest.approx(plain.score("서울", docs, raw=True), abs=1e-5)
    with pytest.raises(ValueError, match="compile applies to backend='torch'"):
        Reranker(str(tiny_ce), backend="onnx", compile=True)


def test_non_finite_logits_raise_naming_the_dtype(tiny_ce, monkeypatch):
    r = Reranker(str(tiny_ce))
    real = r.model

    class Overflowing(torch.nn.Module):
        def forward(self, **batch):
            out = real(**batch)
            out.logits = out.logits + float("inf")
            return out

    r.engine.model = Overflowing()  # what the engine runs
    with pytest.raises(FloatingPointError, match="non-finite logits in torch.float32; not a precision overflow"):
        r.score("질문", ["문서 하나", "문서 둘"])  # fp32: the old hint, "load it in bf16 or fp32", pointed nowhere
    monkeypatch.setattr(type(r), "dtype", property(lambda self: torch.float16))  # a GPU model in half precision
    with pytest.raises(FloatingPointError, match="non-finite logits in torch.float16; load it with dtype='bf16'"):
        r.score("질문", ["문서 하나", "문서 둘"])


def test_score_many_equals_score(tiny, korean_sentences):
    queries = ["날씨", "음식 추천", "교통"]
    docs = [korean_sentences[:5], korean_sentences[5:7], []]
    together = tiny.score_many(queries, docs)
    assert together[2] == []
    for q, d, s in zip(queries, docs, together):
        assert s == pytest.approx(tiny.score(q, d), abs=1e-6)


def test_launch_many_gives_score_many_scores_whatever_runs_in_between(tiny, korean_sentences):
    """launch_many queues a call and returns its collector; a second call launched before the first is
    collected (the HTTP batcher's overlap) changes neither's scores; bad input fails at launch, named."""
    queries, docs = ["날씨", "음식 추천"], [korean_sentences[:5], korean_sentences[5:9]]
    first = tiny.launch_many(queries, docs)
    second = tiny.launch_many(["교통"], [korean_sentences[2:4]], raw=True)
    assert second()[0] == pytest.approx(tiny.score("교통", korean_sentences[2:4], raw=True), abs=1e-6)
    got = first()
    for q, d, s in zip(queries, docs, got):
        assert s == pytest.approx(tiny.score(q, d), abs=1e-6)
    with pytest.raises(ValueError, match="2 queries but 1 document lists"):
        tiny.launch_many(queries, docs[:1])
    assert not tiny.asynchronous  # on a CPU launching computes: the HTTP batcher scores a batch at a time


def test_rerank_order_top_n_and_ties(tiny):
    docs = ["같은 문서", "다른 문서입니다", "같은 문서", "같은 문서"]
    ranked = tiny.rerank("문서", docs)
    assert [r.index for r in ranked] == sorted(range(4), key=lambda i: (-ranked_score(ranked, i), i))
    same = [r.index for r in ranked if r.text == "같은 문서"]
    assert same == sorted(same)  # ties keep input order
    assert all(isinstance(r, RankedDoc) and type(r.score) is float for r in ranked)
    assert len(tiny.rerank("문서", docs, top_n=2)) == 2
    with pytest.raises(ValueError, match="top_n must be a positive integer or None"):
        tiny.rerank("문서", docs, top_n=0)  # not "the default", not []: a caller's 0 is a bug to name
    assert [r.text for r in tiny.rerank("문서", (d for d in docs))] == [r.text for r in ranked]  # a generator


def test_a_pair_given_twice_is_scored_once_and_its_copies_tie(tiny_ce, korean_sentences, monkeypatch):
    """Copies of a document (a chunk indexed twice) and a query repeated in one batch call: each distinct pair
    is scored once, so copies get the very same score and keep their input order when ranked. Scored apart, one
    batch's rows differed in the last bits and three copies ranked 0, 2, 1 (session 25's probe)."""
    reranker = Reranker(str(tiny_ce), backend="torch")
    docs = [korean_sentences[3], *[korean_sentences[7]] * 6, korean_sentences[1], korean_sentences[3]]
    seen = []
    launch = reranker._launch_chunks
    monkeypatch.setattr(reranker, "_launch_chunks", lambda groups: seen.append(groups) or launch(groups))
    scores = reranker.score("부산", docs, raw=True)
    assert seen[-1] == [("부산", [korean_sentences[3], korean_sentences[7], korean_sentences[1]])]
    assert len(set(scores[1:7])) == 1 and scores[0] == scores[8]
    ranked = [r.index for r in reranker.rerank("부산", docs) if r.text == korean_sentences[7]]
    assert ranked == [1, 2, 3, 4, 5, 6]
    together = reranker.score_many(["부산", "서울", "부산"], [docs, docs[:2], docs[::-1]], raw=True)
    assert [("부산", 3), ("서울", 2)] == [(q, len(d)) for q, d in seen[-1]]  # the repeated query merged
    assert together[2] == together[0][::-1]  # one call: one score a pair, exactly
    assert together[0] == pytest.approx(scores, abs=1e-6)  # another call's batches: the same to float noise


def ranked_score(ranked, index):
    return next(r.score for r in ranked if r.index == index)


def test_scores_are_calibrated_floats_and_raw_is_logit(tiny, korean_sentences):
    probs = tiny.score("질문", korean_sentences[:6])
    raw = tiny.score("질문", korean_sentences[:6], raw=True)
    assert all(type(p) is float and 0.0 <= p <= 1.0 for p in probs)
    assert probs == pytest.approx([1 / (1 + pow(2.718281828459045, -x)) for x in raw], abs=1e-6)


def test_two_label_model_scores_relevant_class(tmp_path, korean_sentences):
    from rag_rerank.testing import tiny_albert_cross_encoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_albert_cross_encoder(tmp_path / "two", korean_sentences, num_labels=2)
    r = Reranker(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        probs = model(**tok(["질문"], ["서울은 수도이다"], return_tensors="pt")).logits.softmax(-1)
    assert r.score("질문", ["서울은 수도이다"])[0] == pytest.approx(probs[0, 1].item(), abs=1e-5)


def test_sentence_transformers_layout_and_identity_activation(tmp_path, tiny_ce):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(tiny_ce), activation_fn=torch.nn.Identity())
    ce.save(str(tmp_path / "st"))
    assert json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())["activation_fn"].endswith("Identity")
    r = Reranker(str(tmp_path / "st"))
    pairs = [("서울 날씨", "오늘 서울은 맑다"), ("음식", "김치찌개")]
    expected = ce.predict(pairs).tolist()
    assert [r.score(q, [d])[0] for q, d in pairs] == pytest.approx(expected, abs=1e-5)


def test_untrained_head_warns(e5_dir):
    with pytest.warns(UserWarning, match="no trained classification head"):
        Reranker(str(e5_dir), max_length=32)


def test_untrained_head_warns_on_the_exported_backends_too(tiny_encoder, tmp_path):
    """A bi-encoder given as the reranker was exported with a random head and scored at random in silence on
    ONNX / OpenVINO - the CPU default's path; only torch warned. The check reads the checkpoint's tensor names."""
    import shutil

    from rag_rerank.models import checkpoint_names

    model = shutil.copytree(tiny_encoder, tmp_path / "encoder")
    assert not any(n.startswith("classifier") for n in checkpoint_names(model))
    with pytest.warns(UserWarning, match="no trained classification head in its weights"):
        Reranker(str(model), backend="onnx", max_length=32)
    assert checkpoint_names(tmp_path) is None  # no safetensors weights: no claim either way


def test_a_cross_encoder_given_as_the_bi_encoder_warns(tiny_ce, tiny_encoder):
    """The other way round: a cross-encoder's pooled vectors search badly, and sentence-transformers only
    logged that it made a mean pooling. A bi-encoder says nothing."""
    import warnings

    from rag_rerank import BiEncoder

    with pytest.warns(UserWarning, match="a cross-encoder .* not a bi-encoder"):
        BiEncoder(str(tiny_ce), backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BiEncoder(str(tiny_encoder), backend="torch")


# ------------------------------------------------------------------ threads
def test_sixteen_threads_return_single_threaded_results(tiny, korean_sentences):
    rng = random.Random(3)
    jobs = [(f"질문 {i} " + korean_sentences[i], rng.sample(korean_sentences, 12)) for i in range(64)]
    expected = [tiny.score(q, d) for q, d in jobs]
    tiny.token_cache.clear()  # the threads fill the one cache they share, racing
    with ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(lambda job: tiny.score(*job), jobs))
    assert got == expected  # exactly, not approximately
    assert len(tiny.token_cache) == len({d for _, docs in jobs for d in docs})
    with ThreadPoolExecutor(max_workers=16) as pool:  # and read it, racing
        assert list(pool.map(lambda job: tiny.score(*job), jobs)) == expected


def test_each_thread_gets_its_own_tokenizer(tiny):
    import threading

    barrier = threading.Barrier(2)  # forces two distinct worker threads

    def grab(_):
        barrier.wait()
        return tiny.tokenizer

    with ThreadPoolExecutor(max_workers=2) as pool:
        toks = list(pool.map(grab, range(2)))
    assert toks[0] is not toks[1] and tiny.tokenizer not in toks


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("query", [None, "", "   ", "\n\t"])
def test_bad_query(tiny, query):
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        tiny.score(query, ["문서"])


def test_empty_docs(tiny):
    assert tiny.score("질문", []) == []
    assert tiny.rerank("질문", []) == []


def test_none_in_docs_names_position(tiny):
    with pytest.raises(TypeError, match=r"docs\[2\] is None"):
        tiny.rerank("질문", ["a", "b", None])


@pytest.mark.parametrize("bad", [3, b"bytes", {"text": "x"}])
def test_non_str_doc(tiny, bad):
    with pytest.raises(TypeError, match=r"docs\[1\] is"):
        tiny.score("질문", ["문서", bad])


def test_single_string_docs_rejected(tiny):
    with pytest.raises(TypeError, match="not a single string"):
        tiny.score("질문", "문서 하나")


def test_missing_model_path():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Reranker("./models/does-not-exist")


def test_hub_name_offline_error_points_at_local_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Point at local weights"):
        Reranker("someone/korean-cross-encoder")  # the default has a stand-in: tests/test_shipped.py


def test_trust_remote_code_is_off_by_default(monkeypatch, tiny_ce):
    import transformers

    seen = []
    real = transformers.AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", spy)
    Reranker(str(tiny_ce))
    assert seen == [False]


def test_bad_options(tiny_ce):
    with pytest.raises(ValueError, match="aggregate"):
        Reranker(str(tiny_ce), aggregate="median")
    with pytest.raises(ValueError, match="window_overlap"):
        Reranker(str(tiny_ce), window_overlap=1.0)
    with pytest.raises(ValueError, match="top_n"):
        Reranker(str(tiny_ce)).rerank("q", ["d"], top_n=-1)
    with pytest.raises(ValueError, match="lone surrogate at character 2"):
        Reranker(str(tiny_ce)).rerank("q", ["ab\ud800"])


def test_long_query_is_cut_to_leave_room_for_the_document(tiny_ce):
    r = Reranker(str(tiny_ce), max_length=48)
    found = windows(r, "아주 긴 질문 " * 100, ["문서 본문입니다 " * 30])
    assert len(found) > 1 and all(len(ids) <= 48 for _, ids in found)


# ------------------------------------------------------------ device, dtype
def test_device_and_dtype_resolution(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device(None) == torch.device("cuda")
    # under torchrun each rank gets its own GPU (all ranks on cuda:0 broke DDP on 2 GPUs)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(None) == torch.device("cuda", 1) and resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))


def test_defaults_per_device(tiny_ce):
    cpu = Reranker(str(tiny_ce))
    assert cpu.batch_size == 32 and cpu.dtype == torch.float32
    assert Reranker(str(tiny_ce), batch_size=5).batch_size == 5


def test_pickles_as_its_arguments_and_scores_alike_when_reloaded(tiny_ce, korean_sentences):
    import pickle

    r = Reranker(str(tiny_ce), batch_size=3, max_length=64, aggregate="mean")
    r.score("질문", korean_sentences[:2])  # a used reranker: its thread-local tokenizer exists
    blob = pickle.dumps(r)
    assert len(blob) < 4096  # arguments, not weights
    again = pickle.loads(blob)
    assert (again.batch_size, again.max_length, again.aggregate) == (3, 64, "mean")
    assert again.score("질문", korean_sentences[:5]) == pytest.approx(r.score("질문", korean_sentences[:5]), abs=1e-6)


def test_explicit_bf16_on_cpu_runs(tiny_ce):
    r = Reranker(str(tiny_ce), dtype="bf16")
    assert r.model.dtype == torch.bfloat16
    assert len(r.score("질문", ["문서"])) == 1


def test_speed_switches_are_one_settings_object_and_the_engine_says_what_it_is(tiny_ce, korean_sentences):
    """EngineSettings holds the speed switches; keywords of the same names are laid over it; the engine they
    chose describes itself (what bench/ and the tests read instead of private attributes)."""
    import pickle

    from rag_rerank.reranker.engine import EngineSettings, PackedEngine, PaddedEngine

    query, docs = "서울의 날씨", korean_sentences[:12] + ["가" * 400]
    packed = Reranker(str(tiny_ce), max_length=64)
    padded = Reranker(str(tiny_ce), max_length=64, engine=EngineSettings(pack=False, batch_size=4))
    assert isinstance(packed.engine, PackedEngine) and type(padded.engine) is PaddedEngine
    described = padded.engine.describe()
    assert described == {"engine": "padded", "device": "cpu", "dtype": "float32", "batch_size": 4, "max_length": 64,
                         "compile": False, "fused_ffn": 0}
    assert packed.engine.describe()["engine"] == "packed" and packed.engine.describe()["cuda_graphs"] is None
    assert padded.score(query, docs, raw=True) == pytest.approx(packed.score(query, docs, raw=True), abs=2e-5)
    # a keyword wins over the settings object; batch_size too
    laid = Reranker(str(tiny_ce), max_length=64, engine=EngineSettings(pack=False), pack=True, batch_size=8)
    assert laid.engine.describe()["engine"] == "packed" and laid.batch_size == 8 == laid.engine.batch_size
    # pickled as its arguments, settings included
    again = pickle.loads(pickle.dumps(padded))
    assert type(again.engine) is PaddedEngine and again.engine.batch_size == 4
    with pytest.raises(TypeError, match="unknown engine setting 'packed'"):
        Reranker(str(tiny_ce), packed=False)
    with pytest.raises(TypeError, match="engine must be an EngineSettings"):
        Reranker(str(tiny_ce), engine={"pack": False})
    with pytest.raises(ValueError, match="pack must be True or False"):
        EngineSettings(pack="no")
    with pytest.raises(ValueError, match="batch_size"):
        EngineSettings(batch_size=0)


def test_bf16_on_a_cpu_without_bf16_units_warns(tiny_ce, monkeypatch):
    """torch emulates bf16 on CPUs without bf16 units (AVX2-only: a small linear layer 17x slower than fp32):
    asking for it there says so; where the CPU has them, or for fp32, nothing is said."""
    import platform
    import warnings

    from rag_rerank.models import devices

    monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda: False)
    with pytest.warns(UserWarning, match="bf16 on a CPU without bf16 units"):
        Reranker(str(tiny_ce), dtype="bf16")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Reranker(str(tiny_ce), dtype="fp32")
        monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda: True)
        Reranker(str(tiny_ce), dtype="bf16")
    assert not any("bf16 units" in str(w.message) for w in seen)
    monkeypatch.undo()
    if platform.system() == "Linux" and platform.machine() == "x86_64":  # read off /proc/cpuinfo's flags
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
        assert devices.cpu_has_bf16_units() is ("avx512_bf16" in flags or "amx_bf16" in flags)
