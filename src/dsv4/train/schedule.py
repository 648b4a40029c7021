"""Schedules over the run's progress f in [0, 1] (steps done / steps, or time spent / time budget): the learning
rate (linear warm-up, cosine decay to a tenth), the short-to-long retrieval length curriculum, and the indexer's
dense warm-up."""

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    lr: float = 3e-3
    warmup: float = 0.03  # fraction of the run
    min_len: int = 256
    max_len: int = 4096
    reach_max: float = 0.7  # progress at which the longest retrieval length is reached
    dense_until: float = 0.1  # indexer dense warm-up: CSA attends to every entry until this progress

    def __post_init__(self):
        if not 0 < self.min_len <= self.max_len:
            raise ValueError(f"need 0 < min_len={self.min_len} <= max_len={self.max_len}")

    def learning_rate(self, f: float) -> float:
        if f < self.warmup:
            return self.lr * max(f, 1e-3) / self.warmup
        t = min(1.0, (f - self.warmup) / (1 - self.warmup))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    def longest(self, f: float) -> int:
        """The longest retrieval length at progress f: geometric from min_len to max_len."""
        t = min(1.0, f / self.reach_max)
        return int(self.min_len * (self.max_len / self.min_len) ** t)

    def length(self, f: float, rng: random.Random) -> int:
        """A retrieval sample's length: log-uniform between min_len and the current longest, in steps of 128."""
        hi = self.longest(f)
        n = math.exp(rng.uniform(math.log(self.min_len), math.log(hi)))
        return max(self.min_len, int(n) // 128 * 128)

    def sparse(self, f: float) -> bool:
        return f >= self.dense_until
