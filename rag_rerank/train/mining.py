"""Hard negatives from our own first stage, plus random ones.

A reranker sees, at query time, the first stage's top candidates: the
negatives that teach it most are those same candidates (minus the positives).
Random negatives keep the easy end of the scale calibrated.
"""
from __future__ import annotations

import random
from typing import Sequence

from ..first_stage import FirstStage, candidates_and_sides
from .data import Group, TrainingData


RANDOM_POOL = 20000  # texts random negatives are drawn from (a large store is sampled, not read whole)


def mine_hard_negatives(data: TrainingData, first_stage: FirstStage, *, corpus: Sequence[str] | None = None,
                        num_hard: int = 4, num_random: int = 1, candidate_k: int = 30, skip_top: int = 0,
                        seed: int = 0) -> TrainingData:
    """Return new data whose groups carry ``num_hard`` mined + ``num_random`` random negatives.

    ``first_stage`` is any :class:`~rag_rerank.first_stage.FirstStage`; ``corpus`` (texts) feeds
    the random negatives and defaults to the first stage's own (:meth:`sample_texts`). Positives are
    never used as negatives. Each group also keeps the first stage's top ``candidate_k``
    texts in rank order (``Group.candidates``): validation uses them to evaluate reranking
    and tune fusion exactly as the pipeline will run; a hybrid's two rankings are kept beside them
    (``Group.sides``) so training on the saved file can still tune the hybrid. Scored pairs pass
    through unchanged.
    """
    rng = random.Random(seed)
    pool = list(corpus) if corpus is not None else first_stage.sample_texts(RANDOM_POOL) if num_random else []
    if num_random and not pool:
        raise ValueError("random negatives need a corpus: pass corpus=[...] or num_random=0")
    k = candidate_k + skip_top
    ranked, sides = candidates_and_sides(first_stage, [g.query for g in data.groups], k) if data.groups else ([], [])
    groups = []
    for group, hits, group_sides in zip(data.groups, ranked, sides):
        banned = set(group.positives) | set(group.negatives)
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
                            group_sides))
    return TrainingData(groups, list(data.pairs))
