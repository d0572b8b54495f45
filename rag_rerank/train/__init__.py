"""Fine-tuning the Korean cross-encoder (needs ``rag-rerank[train]``).

    from rag_rerank.train import TrainConfig, preset, train, data

Built on sentence-transformers' CrossEncoderTrainer; see ``recipes`` for the
``seed`` and ``fast`` presets and every knob. Names load on first use: reading data
or a config does not import the training stack.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

_EXPORTS = {
    "DataError": "data", "Group": "data", "ScoredPair": "data", "TrainingData": "data", "from_pairs": "data",
    "load": "data", "PRESETS": "recipes", "TrainConfig": "recipes", "load_config": "recipes", "preset": "recipes",
    "TrainResult": "trainer", "train": "trainer",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .data import DataError, Group, ScoredPair, TrainingData, from_pairs, load
    from .recipes import PRESETS, TrainConfig, load_config, preset
    from .trainer import TrainResult, train


__getattr__, __dir__ = exports(__name__, _EXPORTS)
