"""Hard negatives from our own first stage, plus random ones.

A reranker sees, at query time, the first stage's top candidates: the
negatives that teach it most are those same candidates (minus the positives).
Random negatives keep the easy end of the scale calibrated.
"""
from __future__ import annotations

import random
from typing import Sequence

from ..retrieval.first_stage import FirstStage, candidates_and_sides
from .data import Group, TrainingData
from ..types import check_int, in_chunks


RANDOM_POOL = 20000  # texts random negatives are drawn from (a large store is sampled, not read whole)

# The default mix of negatives follows how good the first stage already is on the queries at hand
# (MRR@10 of its ranking; validation when there is one). Chosen on the validation parts of three
# Korean tasks (BENCHMARKS.md, issue 13), where each mix won where the rule puts it:
#   korquad passages, first stage 0.95: 7 hard + 1 random reranked to 0.979, 1 hard + 7 random 0.967;
#   kornli 0.75 and chatbot 0.08: 1 + 7 gained +0.041 / +0.011 over the first stage, 7 + 1 +0.025 / +0.000.
# A strong first stage leaves the reranker only the order within its top candidates to learn, and
# its runners-up are rarely unlabeled positives; a weak score means either a weak first stage or
# valid answers among its top ranks (the chatbot's generic replies), and then those ranks teach
# the wrong thing while random negatives still teach relevance.
STRONG_FIRST_STAGE = 0.85
MIX_FOR_STRONG = (7, 1)  # (hard, random) negatives per query
MIX_FOR_WEAK = (1, 7)
MIX_SAMPLE = 500  # queries the first stage is scored on to choose the mix


def default_mix(first_stage_mrr: float) -> tuple[int, int]:
    """(hard, random) negatives per query for a first stage of this MRR@10."""
    return MIX_FOR_STRONG if first_stage_mrr >= STRONG_FIRST_STAGE else MIX_FOR_WEAK


def choose_mix(first_stage: FirstStage, groups: Sequence[Group], candidate_k: int = 30,
               num_hard: int | None = None, num_random: int | None = None) -> tuple[int, int, str]:
    """Fill in whichever of ``num_hard``/``num_random`` is None from :func:`default_mix`, scoring
    the first stage on (up to MIX_SAMPLE of) ``groups``. Returns (hard, random, why)."""
    for name, value in (("num_hard", num_hard), ("num_random", num_random)):
        if value is not None:
            check_int(value, name, minimum=0)
    if num_hard is not None and num_random is not None:
        return num_hard, num_random, "as given"
    scored = [g for g in groups if g.positives][:MIX_SAMPLE]
    if not scored:
        hard, rand = MIX_FOR_WEAK
        why = "no queries with positives to score the first stage on (the mix for a weak one)"
    else:
        from ..evaluate import mrr

        ranked, _ = candidates_and_sides(first_stage, [g.query for g in scored], candidate_k)
        value = mrr([[h.text for h in hits] for hits in ranked], [set(g.positives) for g in scored])
        hard, rand = default_mix(value)
        side = "at or above" if value >= STRONG_FIRST_STAGE else "below"
        why = f"first stage MRR@10 {value:.4f} on {len(scored)} queries, {side} {STRONG_FIRST_STAGE:g}"
    hard, rand = (hard if num_hard is None else num_hard), (rand if num_random is None else num_random)
    given = " and ".join(n for n, v in (("hard", num_hard), ("random", num_random)) if v is not None)
    return hard, rand, f"{why}: {hard} hard + {rand} random negatives" + (f" ({given} as given)" if given else "")


PROGRESS_CHUNK = 512  # queries a first-stage call takes while a progress bar shows


def mine_hard_negatives(data: TrainingData, first_stage: FirstStage, *, corpus: Sequence[str] | None = None,
                        num_hard: int = 4, num_random: int = 1, candidate_k: int = 30, skip_top: int = 0,
                        seed: int = 0, progress: bool = False) -> TrainingData:
    """Return new data whose groups carry ``num_hard`` mined + ``num_random`` random negatives.

    ``first_stage`` is any :class:`~rag_rerank.first_stage.FirstStage`; ``corpus`` (texts) feeds
    the random negatives and defaults to the first stage's own (:meth:`sample_texts`). Positives are
    never used as negatives. Each group also keeps the first stage's top ``candidate_k``
    texts in rank order (``Group.candidates``): validation uses them to evaluate reranking
    and tune fusion exactly as the pipeline will run; a hybrid's two rankings are kept beside them
    (``Group.sides``) so training on the saved file can still tune the hybrid. Scored pairs pass
    through unchanged.
    """
    for name, value, least in (("num_hard", num_hard, 0), ("num_random", num_random, 0), ("skip_top", skip_top, 0),
                               ("candidate_k", candidate_k, 1)):
        check_int(value, name, minimum=least)  # a negative count sliced from the end of the list
    rng = random.Random(seed)
    pool = list(corpus) if corpus is not None else first_stage.sample_texts(RANDOM_POOL) if num_random else []
    if num_random and not pool:
        raise ValueError("random negatives need a corpus: pass corpus=[...] or num_random=0")
    k = candidate_k + skip_top
    queries = [g.query for g in data.groups]
    # a bar on stderr with progress: thousands of queries take minutes on a CPU
    parts = in_chunks(lambda a, b: candidates_and_sides(first_stage, queries[a:b], k), len(queries), PROGRESS_CHUNK,
                      "mining", progress) if queries else []
    ranked = [row for r, _ in parts for row in r]
    sides = [side for _, sd in parts for side in sd]
    # every document relevant to the query is banned, whichever row names it: a query given as several groups
    # (built in Python; files are merged at load) or with pairs labelled relevant
    relevant = data.relevant()
    groups = []
    for group, hits, group_sides in zip(data.groups, ranked, sides):
        banned = relevant[group.query] | set(group.negatives)
        hard = [h.text for h in hits[skip_top:] if h.text not in banned]
        hard = list(dict.fromkeys(hard))[:num_hard]
        taken = banned | set(hard)
        randoms: list[str] = []
        for _ in range(num_random * 20):
            if len(randoms) >= num_random:
                break
            doc = rng.choice(pool)
            if doc not in taken:
                randoms.append(doc)
                taken.add(doc)
        ranked_texts = list(dict.fromkeys(h.text for h in hits[:k]))
        groups.append(Group(group.query, list(group.positives), group.negatives + hard + randoms, ranked_texts,
                            group_sides, group.topic))
    return TrainingData(groups, list(data.pairs))
