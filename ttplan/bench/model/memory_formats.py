"""Dense and TT in both memory formats, all four timed interleaved in one process: the best of each.

A PyTorch user on a CPU can run the dense model channels-last, and that alone made the dense ResNets
faster on the development machine; the TT model may be fastest in either format. `bench model
--channels-last` compares both models channels-last, and beside that times four models in one set of
interleaved rounds: the dense model as loaded (NCHW) and channels-last, the TT model planned for NCHW
(the run's objective, profile file aside: the NCHW profile `load_profile` finds, as `ttplan emit` would
use) and the TT model of the channels-last run. Its answer is the best dense against the best TT,
each in whichever format suits it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the four models, in the order they are timed and reported
MODELS = ("dense NCHW", "dense channels-last", "TT NCHW", "TT channels-last")


@dataclass(frozen=True)
class FormatTimings:
    """Median ms of each of `MODELS` over the same interleaved rounds."""

    ms: dict[str, float]

    def best(self, kind: str) -> str:
        """The fastest of the dense (`kind="dense"`) or TT (`"TT"`) models, by name."""
        return min((name for name in MODELS if name.startswith(kind + " ")), key=self.ms.__getitem__)

    @property
    def speedup(self) -> float:
        """The best dense model's time over the best TT model's."""
        return self.ms[self.best("dense")] / self.ms[self.best("TT")]


__all__ = ["MODELS", "FormatTimings"]
