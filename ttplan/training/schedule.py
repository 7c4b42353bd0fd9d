"""Learning-rate schedules of a training segment: per batch, a short linear warm-up then a cosine decay to zero
(the default); or per epoch, a cosine over epochs with no warm-up (ttplan 0.2's, kept to measure the difference).

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



@dataclass
class EpochCosine:
    """The rate factor at step `t`: constant within an epoch, `(1 + cos(π·e/epochs)) / 2` in epoch `e` (0-based).

    A one-epoch segment runs at the full rate throughout; no warm-up. For ablations of the per-batch schedule.
    """

    epochs: int
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        epoch = min(step // max(1, self.steps_per_epoch), max(0, self.epochs - 1))
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, self.epochs)))


#: the schedules by name, as `TrainConfig.lr_schedule` and `ttplan train --lr-schedule` spell them
SCHEDULES = ("batch", "epoch")


def segment_schedule(kind: str, epochs: int, steps_per_epoch: int) -> WarmupCosine | EpochCosine:
    """The schedule of a segment of `epochs` epochs of `steps_per_epoch` batches: `batch` or `epoch`."""
    if kind == "batch":
        return WarmupCosine.for_segment(epochs, steps_per_epoch)
    if kind == "epoch":
        return EpochCosine(epochs=max(1, epochs), steps_per_epoch=steps_per_epoch)
    raise ValueError(f"lr_schedule={kind!r}: expected one of {', '.join(SCHEDULES)}")


__all__ = ["SCHEDULES", "WARMUP_FRACTION", "EpochCosine", "WarmupCosine", "segment_schedule"]
