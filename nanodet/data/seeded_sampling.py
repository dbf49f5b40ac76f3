"""The CPU pipeline's epochs as a function of (seed, epoch): order and augmentation alike.

Upstream draws the order from torch's global generator and the augmentation from Python's
``random`` in whatever process runs the pipeline, so an epoch depends on everything drawn before
it: a fit resumed from an epoch checkpoint trains on other batches than the uninterrupted one
(1.6% apart in weights after a few epochs). Here the sampler draws epoch ``e``'s order and one
seed per sample from ``(seed, e)``, and the dataset runs each sample's augmentation under its
seed (``BaseDataset.__getitem__`` takes ``(index, seed)``). An epoch is then the same whether
the fit was resumed or not, and whatever the number of DataLoader workers. Lightning calls
``set_epoch`` before every epoch, resumed ones included.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _sample_seeds(rng: np.random.Generator, count: int) -> list[int]:
    return rng.integers(0, 2**63 - 1, size=count, dtype=np.int64).tolist()


class SeededSampler(torch.utils.data.Sampler):
    """Each epoch's order (shuffled or not) as ``(index, sample seed)`` pairs; under DDP each
    rank takes every ``world_size``-th of the same order, the same count on each."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.num_samples // self.world_size

    def __iter__(self):
        rng = _epoch_rng(self.seed, self.epoch)
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = _sample_seeds(rng, self.num_samples)
        pairs = [(int(index), seeds[position]) for position, index in enumerate(order)]
        yield from pairs[self.rank::self.world_size][:len(self)]


class SeededBatches(torch.utils.data.Sampler):
    """A batch sampler's batches (e.g. replay's, itself seeded by epoch) with a seed for every
    sample, drawn from ``(seed, epoch)``. Like replay's sampler, each iteration starts the next
    epoch unless ``set_epoch`` says otherwise (Lightning sets no batch sampler's epoch)."""

    def __init__(self, batch_sampler: Iterable[Sequence[int]], seed: int) -> None:
        self.batch_sampler, self.seed, self.epoch = batch_sampler, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.batch_sampler, "set_epoch", None)):
            self.batch_sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        rng = _epoch_rng(self.seed, self.epoch)
        self.epoch += 1
        for batch in self.batch_sampler:
            yield list(zip((int(i) for i in batch), _sample_seeds(rng, len(batch))))
