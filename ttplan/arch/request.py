"""One architecture planning request, as every command makes it: a policy plan, or a budget search when targets are set.

`ttplan plan`, `emit --arch`, `bench model` and `bench lowerings` build it from the same options (`CHOICES`: the
config, the policy, the rule for the layers a config does not name, `--skip-worse` and the budget) and plan
through `run_request`. The request checks its own combinations (a budget picks the ranks, so it refuses a uniform
rank or a rank fraction; it costs candidates by prediction on stock ops, so it refuses `--autotune` and `--fuse`; a
format search needs a budget), runs, and returns the plan, the formats it chose, any extra report keys and the
warnings to show (orders from the bounded search, a profile fitted for the other memory format).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttplan.arch.config import LayerConfig, load_config, save_config
from ttplan.arch.policy import DEFAULT_RANK_FRACTION, Policy, unnamed_rule
from ttplan.errors import TTPlanError

if TYPE_CHECKING:  # torch-free either way; imported where used so that `--help` stays light
    from ttplan.core.latency import LatencyProfile

#: (label, length) -> a context manager whose `update(n)` advances a progress display
Progress = Callable[[str, int], AbstractContextManager[Any]]
#: the fields that choose each layer's format (`ttplan plan`'s policy and budget options); the others say what is
#: planned and how it is costed
CHOICES = ("config_path", "policy", "unnamed", "skip_worse", "target_macs_reduction", "target_params_reduction",
           "target_speedup", "search_format")


@dataclass(frozen=True)
class PlanRequest:
    """What to plan and how. `targets` are model-level reductions in [0, 1) of MACs and parameters (None: no budget)."""

    arch: str
    input_size: tuple[int, int, int] | None = None
    config_path: str | Path | None = None
    policy: Policy = field(default_factory=Policy)
    batch: int = 1
    fold_weights: bool = False
    skip_worse: bool = False
    target_macs_reduction: float | None = None
    target_params_reduction: float | None = None
    search_format: bool = False
    #: what each layer's order minimises, the latency profile file (None: the user's where anything is chosen by
    #: time, else the default one: `ttplan.latency.profiles.load_profile`),
    #: whether layers slower than dense stay dense (None: with `latency`), a device to autotune on, a speedup target
    objective: str = "macs"
    profile_path: str | Path | None = None
    skip_slower: bool | None = None
    autotune: str | None = None
    target_speedup: float | None = None
    #: plan for a model run channels-last (TT layers on NHWC maps)
    channels_last: bool = False
    #: layers may run as one fused kernel call where predicted faster (None: where a C compiler is found, NCHW);
    #: a budget search plans stock ops
    fused: bool | None = None
    #: config entries given directly (e.g. a training run's recorded formats), in place of `config_path`
    layer_config: dict[str, LayerConfig] | None = None
    #: what the layers the config does not name get: `policy` or `dense` (None: `unnamed_rule`'s default)
    unnamed: str | None = None
    #: a latency profile given directly (e.g. one loaded for a device), in place of `profile_path`
    latency_profile: LatencyProfile | None = None

    def __post_init__(self) -> None:
        if self.config_path is not None and self.layer_config is not None:
            raise TTPlanError(f"config {self.config_path} and config entries both given: give one")
        if self.profile_path is not None and self.latency_profile is not None:
            raise TTPlanError(f"profile {self.profile_path} and a loaded profile both given: give one")
        unnamed_rule(self.unnamed, self.has_config, self.budget)
        if self.search_format and not self.budget:
            raise TTPlanError("--search-format needs a budget: add --target-macs-reduction, "
                              "--target-params-reduction and/or --target-speedup")
        if not self.budget:
            return
        given = self.targets()
        if self.target_speedup is not None and self.target_macs_reduction is not None:
            raise TTPlanError(f"{given} both given: give one (both constrain the same axis of the budget search: "
                              "predicted time replaces MACs)")
        if self.channels_last:
            raise TTPlanError(f"--channels-last and {given}: --channels-last applies to policy and config plans; a "
                              "budget search plans NCHW layers: drop --channels-last or the targets")
        if self.policy.rank is not None:
            raise TTPlanError(f"{given} and --rank {self.policy.rank} both given: the budget picks each layer's "
                              "ranks; drop --rank (or the target)")
        if self.policy.rank_fraction != DEFAULT_RANK_FRACTION:
            raise TTPlanError(f"{given} and --rank-fraction {self.policy.rank_fraction:g} both given: the budget "
                              "picks each layer's ranks; drop --rank-fraction (or the target)")
        if self.autotune is not None:
            raise TTPlanError(f"{given} and --autotune {self.autotune} both given: a budget search costs hundreds "
                              "of candidates by prediction, too many to time; save its choice with --save-config "
                              "FILE, then run `ttplan plan --config FILE --autotune`")
        if self.fused:
            raise TTPlanError(f"{given} and --fuse both given: a budget search costs every layer on stock ops; "
                              "save its choice with --save-config FILE, then run `ttplan plan --config FILE --fuse`")

    @classmethod
    def with_choices(cls, arch: str, choices: dict[str, Any] | None = None, **fields: Any) -> PlanRequest:
        """A request for `arch` choosing formats as `choices` says (`CHOICES` as JSON values, `policy` as `Policy`'s
        fields; missing ones at their defaults) and planning and costing as `fields` say."""
        given = dict(choices or {})
        unknown = sorted(set(given) - set(CHOICES))
        if unknown:
            raise TTPlanError(f"plan choices {', '.join(unknown)}: unknown; accepted: {', '.join(CHOICES)}")
        policy = Policy.from_dict(given.pop("policy", None) or {})
        return cls(arch, policy=policy, **given, **fields)

    def choices(self) -> dict[str, Any]:
        """The `CHOICES` as JSON values: what `with_choices` reads back (e.g. in a fresh process)."""
        out = {name: getattr(self, name) for name in CHOICES}
        out["policy"] = self.policy.to_dict()
        out["config_path"] = None if self.config_path is None else str(self.config_path)
        return out

    @property
    def has_config(self) -> bool:
        """Whether a config names layers (a file or entries given directly)."""
        return self.config_path is not None or self.layer_config is not None

    @property
    def unnamed_layers(self) -> str:
        """What the layers the config does not name get, `policy` or `dense` (`ttplan.arch.policy.unnamed_rule`)."""
        return unnamed_rule(self.unnamed, self.has_config, self.budget)

    def targets(self) -> str:
        """The budget targets given, as the command line spells them (e.g. `--target-speedup 1.5`)."""
        named = (("--target-macs-reduction", self.target_macs_reduction),
                 ("--target-params-reduction", self.target_params_reduction),
                 ("--target-speedup", self.target_speedup))
        return " and ".join(f"{option} {value:g}" for option, value in named if value is not None)

    @property
    def budget(self) -> bool:
        """Whether a reduction target is set (then the ranks are searched)."""
        return (self.target_macs_reduction is not None or self.target_params_reduction is not None
                or self.target_speedup is not None)

    @property
    def by_time(self) -> bool:
        """Whether the request chooses anything by predicted time (only then is the user's cached profile read)."""
        return (self.objective == "latency" or bool(self.skip_slower) or self.autotune is not None
                or self.target_speedup is not None)

    def profile(self) -> LatencyProfile:
        """The latency profile given, else the one the request names (a missing or malformed file is a one-line
        error); without a file, `ttplan.latency.profiles.load_profile`'s rule: the user's calibrated one only where
        `by_time`; of the device autotune measures on (`--autotune cuda`: the CUDA one `ttplan calibrate --device cuda`
        saved), else the CPU's. Each call reads the file again: `run_request` calls it once and passes the profile
        down."""
        from ttplan.latency.profiles import load_profile

        if self.latency_profile is not None:
            return self.latency_profile
        return load_profile(self.profile_path, device=self.autotune or "cpu", channels_last=self.channels_last,
                            by_time=self.by_time)


@dataclass
class PlanOutcome:
    """The planned architecture, its formats, extra report keys (the budget outcome), an unmet-target message and
    warnings (one line each)."""

    plan: object  # ArchPlan (imports torch for tracing)
    formats: dict
    extra: dict | None = None
    unmet: str | None = None
    warnings: list[str] = field(default_factory=list)


def run_request(request: PlanRequest, progress: Progress | None = None) -> PlanOutcome:
    """Plan `request`. A budget opens `progress(label, candidates)` and calls its `update(1)` per candidate costed."""
    from ttplan.arch.architecture import plan_architecture
    from ttplan.latency.machine import profile_warnings

    config = load_config(request.config_path) if request.config_path is not None else request.layer_config
    profile = request.profile()  # the one read of the profile file of this command
    if request.budget:
        problem = prepare(request, config, profile)
        if progress is None:
            result = problem.solve()
        else:
            with progress("costing candidate formats", len(problem.jobs)) as bar:
                result = problem.solve(progress=bar.update)
        outcome = PlanOutcome(result.plan, result.formats, {"budget": result.to_dict()},
                              None if result.met else result.message)
    else:
        planned = plan_architecture(request.arch, request.input_size, config, request.policy, request.batch,
                                    request.fold_weights, request.skip_worse, objective=request.objective,
                                    profile=profile, skip_slower=request.skip_slower,
                                    autotune=request.autotune, channels_last=request.channels_last,
                                    fused=request.fused, unnamed=request.unnamed)
        outcome = PlanOutcome(planned, planned.formats())
    if request.config_path is not None:
        outcome.plan.notes.insert(0, f"config: {request.config_path}; {unnamed_note(request)}")
    bounded = bounded_note(outcome.plan)
    if bounded is not None:
        outcome.plan.notes.append(bounded)
    outcome.warnings = ([bounded] if bounded is not None else []) + profile_warnings(profile, request.channels_last)
    return outcome


def unnamed_note(request: PlanRequest) -> str:
    """What the layers the request's config does not name got, in words (a note of the plan)."""
    if request.unnamed_layers == "dense":
        return "the layers it does not name stay dense (--unnamed dense)"
    if request.budget:
        return "the budget searched the layers it does not name"
    return "the layers it does not name follow the policy (--unnamed policy)"


def bounded_note(plan) -> str | None:
    """One line naming the decomposed layers of an `ArchPlan` whose best order the bounded search found, if any."""
    from ttplan.core.search import BOUNDED_NOTE

    names = [layer.name for layer in plan.layers if layer.plan is not None and any(p.best.bounded
                                                                                   for p in layer.call_plans)]
    if not names:
        return None
    return f"best order of {', '.join(names)} {BOUNDED_NOTE}"


def prepare(request: PlanRequest, config: dict | None = None, profile: LatencyProfile | None = None):
    """The budget problem of a request with targets (its `jobs` are the candidates `solve` will cost); `profile`:
    the request's (`PlanRequest.profile()`), read here if not given."""
    from ttplan.arch.budget import prepare_budget

    if config is None:
        config = load_config(request.config_path) if request.config_path is not None else request.layer_config
    if profile is None:
        profile = request.profile()
    return prepare_budget(request.arch, request.input_size, target_macs_reduction=request.target_macs_reduction,
                          target_params_reduction=request.target_params_reduction, policy=request.policy,
                          config=config, search_format=request.search_format, batch=request.batch,
                          fold_weights=request.fold_weights, target_speedup=request.target_speedup,
                          objective=request.objective, profile=profile, skip_worse=request.skip_worse,
                          skip_slower=request.skip_slower, unnamed=request.unnamed, fused=request.fused)


def save_plan_config(outcome: PlanOutcome, path: str | Path) -> bool:
    """Write the planned formats as a reusable config (atomic); True if a file was replaced."""
    replaced = Path(path).exists()
    save_config(outcome.formats, outcome.plan.specs(), path)
    outcome.plan.notes.append(f"config written to {path}")
    return replaced
