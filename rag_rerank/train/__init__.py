"""Fine-tuning the Korean cross-encoder (needs ``rag-rerank[train]``).

    from rag_rerank.train import TrainConfig, preset, train, data

Built on sentence-transformers' CrossEncoderTrainer; see ``recipes`` for the
``seed`` and ``fast`` presets and every knob.
"""
from .data import DataError, Group, ScoredPair, TrainingData, from_pairs, load
from .recipes import PRESETS, TrainConfig, load_config, preset
from .trainer import TrainResult, train

__all__ = ["DataError", "Group", "ScoredPair", "TrainingData", "from_pairs", "load", "PRESETS", "TrainConfig",
           "load_config", "preset", "TrainResult", "train"]
