"""What CrossEncoderTrainer lacks for throughput, added around it.

Where the time goes in a stock run (see BENCHMARKS.md): the losses tokenise
inside ``forward`` on the main process, so the GPU waits for the tokenizer, and
random batches of short and long pairs pad everything to the longest. Here:

* :class:`LengthGroupedBatchSampler` puts pairs of similar length together
  (shuffled at the level of mega-batches, so order stays random enough);
* :class:`PairTokenizingCollator` tokenises in the DataLoader workers;
* :class:`RerankerTrainer.compute_loss` feeds those tensors straight to the model.
"""
from __future__ import annotations

import random

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.cross_encoder import CrossEncoderTrainer


class LengthGroupedBatchSampler(DefaultBatchSampler):
    """Batches of similar-length (query, document) pairs, in random order."""

    megabatch_factor = 50

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        text_columns = [c for c in dataset.column_names if c not in (valid_label_columns or []) and c != "label"]
        # Characters are a good enough proxy for tokens to bucket by, and free to compute.
        columns = [dataset[c] for c in text_columns[:2]]
        self.lengths = [sum(len(t) for t in row) for row in zip(*columns)]
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, seed

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        mega = self.batch_size * self.megabatch_factor
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[s : s + self.batch_size] for s in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        yield from batches

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def length_grouped_sampler(dataset, **kwargs):
    return LengthGroupedBatchSampler(dataset, **kwargs)


class PairTokenizingCollator:
    """(query, document, label) rows -> padded tensors, in the loader worker processes."""

    valid_label_columns = ["label"]

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict]) -> dict:
        cols = [c for c in rows[0] if c != "label"]
        enc = self.tokenizer([r[cols[0]] for r in rows], [r[cols[1]] for r in rows], padding=True,
                             truncation="longest_first", max_length=self.max_length, return_tensors="pt")
        batch = dict(enc)
        batch["label"] = torch.tensor([float(r["label"]) for r in rows])
        return batch


class RerankerTrainer(CrossEncoderTrainer):
    """CrossEncoderTrainer that also accepts pre-tokenised batches (BCE on one logit)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "input_ids" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("label").float()
        device = next(model.parameters()).device  # model may be wrapped (DataParallel / DDP)
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        logits = model(features)["scores"].view(-1).float()
        if logits.shape != labels.shape:  # a packed row whose pair boundaries did not reach the model
            raise RuntimeError(f"the model gave {logits.numel()} scores for a batch of {labels.numel()} pairs: its "
                               "forward dropped the packed batch's pair boundaries (train with pack false)")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device))
        return (loss, {}) if return_outputs else loss
