"""What the exact search minimises: an objective scores each step and combines subtree scores.

An objective is a small object with two calls (the protocol below), registered by name in
`OBJECTIVES`, as opt_einsum registers its path optimizers:

- `macs`: MACs per forward; ties broken by the smaller largest intermediate;
- `memory`: the largest intermediate; ties broken by fewer MACs;
- `latency`: predicted microseconds per forward under a `LatencyProfile` (`ttplan calibrate`);
  ties broken by the smaller largest intermediate.

A score is a tuple compared lexicographically: (objective, tie-break, weight MACs). A step's cost
must depend only on its two operands, which is what makes the search's dynamic programming exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ttplan.core.contraction import Operand, PairCost
from ttplan.core.latency import LatencyProfile, step_shape
from ttplan.core.network import TensorNetwork
from ttplan.errors import TTPlanError

#: (objective, tie-break, weight MACs), compared lexicographically
Score = tuple[float, int, int]
ZERO: Score = (0, 0, 0)


class Objective(Protocol):
    """Scores steps for the search; `additive` objectives sum step costs, the others take the largest."""

    name: str

    def step_cost(self, network: TensorNetwork, a: Operand, b: Operand, cost: PairCost, folded: bool) -> float:
        """The per-forward cost of contracting `a` with `b` (0 for a weight-only step that is folded)."""
        ...

    def combine(self, a: Score, b: Score, step: float, elements: int) -> Score:
        """Score of subtrees `a` and `b` joined by one step of cost `step` creating `elements` elements."""
        ...


def forward_macs(cost: PairCost, folded: bool) -> int:
    """A step's MACs per forward: a weight-only step costs nothing once weights are folded at load."""
    return 0 if folded and cost.kind == "weight" else cost.macs


@dataclass(frozen=True)
class Macs:
    """Fewest MACs per forward (ties: smaller largest intermediate)."""

    name: str = "macs"

    def step_cost(self, network: TensorNetwork, a: Operand, b: Operand, cost: PairCost, folded: bool) -> float:
        return forward_macs(cost, folded)

    def combine(self, a: Score, b: Score, step: float, elements: int) -> Score:
        return (a[0] + b[0] + step, max(a[1], b[1], elements), a[2] + b[2])


@dataclass(frozen=True)
class Memory:
    """Smallest largest intermediate (ties: fewer MACs)."""

    name: str = "memory"

    def step_cost(self, network: TensorNetwork, a: Operand, b: Operand, cost: PairCost, folded: bool) -> float:
        return forward_macs(cost, folded)

    def combine(self, a: Score, b: Score, step: float, elements: int) -> Score:
        return (max(a[0], b[0], elements), int(a[1] + b[1] + step), a[2] + b[2])


@dataclass(frozen=True)
class Latency:
    """Least predicted time per forward under `profile` (ties: smaller largest intermediate)."""

    profile: LatencyProfile
    name: str = "latency"

    def step_cost(self, network: TensorNetwork, a: Operand, b: Operand, cost: PairCost, folded: bool) -> float:
        if folded and cost.kind == "weight":
            return 0.0
        return self.profile.predict(step_shape(network, a, b, cost))

    def combine(self, a: Score, b: Score, step: float, elements: int) -> Score:
        return (a[0] + b[0] + step, max(a[1], b[1], elements), a[2] + b[2])


#: objective name -> factory (a `profile` keyword is passed to those that take one)
OBJECTIVES: dict[str, Callable[..., Objective]] = {"macs": Macs, "memory": Memory, "latency": Latency}


def needs_profile(what: str) -> TTPlanError:
    """The one-line error of a choice by predicted time made without a latency profile (the library reads none)."""
    return TTPlanError(f"{what} needs a latency profile: pass profile= (a LatencyProfile; "
                       "ttplan.latency.profiles.load_profile() reads this machine's calibrated one, else the default)")


def make_objective(objective: str | Objective = "macs", profile: LatencyProfile | None = None) -> Objective:
    """The objective of that name (`latency` needs `profile`: nothing here reads a profile file); an object passes
    through."""
    if not isinstance(objective, str):
        return objective
    if objective not in OBJECTIVES:
        raise TTPlanError(f"objective={objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if objective == "latency":
        if profile is None:
            raise needs_profile("objective='latency'")
        return Latency(profile)
    return OBJECTIVES[objective]()


__all__ = ["OBJECTIVES", "Latency", "Macs", "Memory", "Objective", "Score", "make_objective", "needs_profile"]
