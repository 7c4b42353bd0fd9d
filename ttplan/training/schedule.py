"""Per-batch learning-rate schedule: a short linear warm-up, then a cosine decay to zero over the segment.

Stepping once per batch (not once per epoch) means a one-epoch phase still decays its rate; the warm-up keeps
the first steps after a phase change (new optimizer, fresh momentum, a freshly decomposed model) small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the warm-up takes this share of a segment's steps, and at most one epoch of them
WARMUP_FRACTION = 0.05


@dataclass
class WarmupCosine:
    """The rate factor at step `t` of a segment of `total` steps, the first `warmup` of them rising linearly.

    A plain object (not a lambda), so `LambdaLR.state_dict()` saves its fields and a resume restores them.
    """

    total: int
    warmup: int

    @classmethod
    def for_segment(cls, epochs: int, steps_per_epoch: int) -> WarmupCosine:
        """The schedule of a segment of `epochs` epochs of `steps_per_epoch` batches each."""
        total = max(1, epochs * steps_per_epoch)
        warmup = min(steps_per_epoch, int(WARMUP_FRACTION * total)) if total > 1 else 0
        return cls(total=total, warmup=warmup)

    def __call__(self, step: int) -> float:
        """Factor of the base rate for the step about to run (0-based)."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(1, self.total - self.warmup)
        progress = min(step - self.warmup, span) / span
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def mean(self, first: int, last: int) -> float:
        """The mean factor over steps `first .. last - 1` (what one epoch of the segment runs at, on average)."""
        steps = range(first, max(first + 1, last))
        return sum(self(t) for t in steps) / len(steps)


__all__ = ["WARMUP_FRACTION", "WarmupCosine"]
