"""One planning request for every command (issue #24): `plan`, `train`, `bench model` and `bench lowerings` decide
the same layers from the same options, and the JSON of `plan --json` is a config that replans to the same totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import one_line_error, run
from ttplan.arch.architecture import plan_architecture
from ttplan.arch.policy import Policy
from ttplan.arch.request import PlanRequest, run_request
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.errors import TTPlanError

#: the committed ResNet-20 config: 12 layers of layer2 and layer3, the rest of the model unnamed
CONFIG = Path(__file__).resolve().parents[2] / "reports" / "configs" / "resnet20_hodec.json"
#: `ttplan train`'s quickest run that still decomposes (its plan.json is the TT model it trained)
TINY_RUN = ["--dataset", "digits", "--image-size", "8", "--max-batches", "1", "--pretrain-epochs", "0",
            "--admm-epochs", "1", "--finetune-epochs", "0", "--threads", "1"]
#: time proportional to MACs, so that a latency objective decomposes layers whatever this machine measured
MAC_PROFILE = LatencyProfile("macs", "cpu", 1, "test", {f"{k}:any": OpModel(0.0, 0.0, 1.0)
                                                        for k in ("feature", "conv", "weight", "dense")})

pytestmark = pytest.mark.usefixtures("keep_threads")


def planned(args: list) -> dict:
    """`ttplan plan ARGS --json`, parsed."""
    result = run(["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def layer_formats(plan: dict) -> dict[str, object]:
    """Each layer's format as planned (None where dense)."""
    return {row["name"]: row["format"] if row["decomposed"] else None for row in plan["layers"]}


def costs(plan: dict) -> dict[str, tuple]:
    """Each layer's decomposition, format and planned MACs and parameters."""
    return {row["name"]: (row["decomposed"], row["format"] if row["decomposed"] else None, row["best"]["macs"],
                          row["best"]["params"]) for row in plan["layers"]}


@pytest.mark.parametrize("rule", [[], ["--unnamed", "policy"]], ids=["default", "policy"])
def test_plan_and_train_decompose_the_same_layers_of_a_config(tmp_path, rule) -> None:
    """`plan --config` sent the layers the config does not name to the policy while `train --config` kept them
    dense, so the two reported different models; both now follow one rule (dense by default)."""
    out = tmp_path / "run"
    result = run(["train", "--arch", "resnet20", "--config", CONFIG, *rule, *TINY_RUN, "--out", out])
    assert result.exit_code == 0, result.output
    trained = json.loads((out / "plan.json").read_text())
    plan = planned(["resnet20", "--config", CONFIG, *rule, "--input-size", ",".join(map(str, trained["input_size"]))])
    assert costs(trained) == costs(plan)
    assert trained["totals"]["tt"] == plan["totals"]["tt"]
    named = set(json.loads(CONFIG.read_text()))
    decomposed = {name for name, fmt in layer_formats(plan).items() if fmt is not None}
    assert decomposed == named if not rule else decomposed > named


@pytest.mark.parametrize("options", [
    ["--format", "tr", "--order", "2", "--rank", "6", "--linear", "--skip-worse"],  # layers --skip-worse rejected
    ["--order", "2", "--rank", "2", "--linear", "--no-skip-first"],  # a TT-matrix linear layer, the first conv
    ["--target-params-reduction", "0.5"],  # a budget's choice
], ids=["skip-worse", "linear", "budget"])
def test_plan_json_is_a_config_that_replans_to_the_same_totals(tmp_path, options) -> None:
    """The JSON of `plan --json` (formats spelled `kind`, MACs and every other key beside them) is accepted by
    `--config`: every layer it decomposed in its format, every other one dense."""
    first = tmp_path / "plan.json"
    first.write_text(run(["plan", "resnet20", *options, "--json"]).stdout)
    original = json.loads(first.read_text())
    again = planned(["resnet20", "--config", first])
    assert again["totals"] == original["totals"]
    assert layer_formats(again) == layer_formats(original)
    assert again["notes"][0] == f"config: {first}; the layers it does not name stay dense (--unnamed dense)"


def test_a_config_entry_may_spell_its_format_kind(tmp_path) -> None:
    path = tmp_path / "kind.json"
    path.write_text(json.dumps({"layer1.0.conv1": {"kind": "classical", "rank": 4}}))
    formats = layer_formats(planned(["resnet20", "--config", path]))
    assert [(name, fmt["kind"]) for name, fmt in formats.items() if fmt] == [("layer1.0.conv1", "classical")]


def test_a_plan_json_that_is_not_a_plan_is_one_line(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"layers": [{"name": "layer1.0.conv1", "decomposed": True, "format": None}]}))
    one_line_error(run(["plan", "resnet20", "--config", path]), "layer1.0.conv1", "has no format")
    path.write_text(json.dumps({"layer1.0.conv1": {"format": "hodec", "kind": "classical", "rank": 4}}))
    one_line_error(run(["plan", "resnet20", "--config", path]), "format='hodec' and kind='classical' differ")


def test_unusable_unnamed_rules_are_one_line(tmp_path) -> None:
    one_line_error(run(["plan", "resnet20", "--unnamed", "dense"]), "--unnamed dense without --config")
    one_line_error(run(["plan", "resnet20", "--config", CONFIG, "--unnamed", "dense", "--target-macs-reduction",
                        "0.5"]), "--unnamed dense with a budget target")
    one_line_error(run(["train", "--unnamed", "dense", *TINY_RUN, "--out", tmp_path / "r"]),
                   "--unnamed dense without --config")
    result = run(["plan", "resnet20", "--unnamed", "all"])
    assert result.exit_code == 2 and "'all' is not one of 'policy', 'dense'" in result.output


def test_a_budget_searches_the_layers_a_config_does_not_name() -> None:
    plan = planned(["resnet20", "--config", CONFIG, "--target-params-reduction", "0.8"])
    assert plan["notes"][0].endswith("the budget searched the layers it does not name")
    assert any(row["source"] == "budget" and row["decomposed"] for row in plan["layers"])


def test_a_request_carries_its_choices_as_json() -> None:
    """`bench model` sends its request's choices to fresh processes as JSON: they read back to the same request."""
    request = PlanRequest.with_choices("resnet20", {"config_path": str(CONFIG), "unnamed": "policy",
                                                    "policy": {"rank": 4, "skip_first": False}}, batch=2)
    assert json.loads(json.dumps(request.choices())) == request.choices()
    assert PlanRequest.with_choices("resnet20", request.choices(), batch=2) == request
    with pytest.raises(TTPlanError, match="plan choices batch: unknown"):
        PlanRequest.with_choices("resnet20", {"batch": 2})


def test_bench_lowerings_and_bench_model_plan_what_plan_plans() -> None:
    """Both benchmarks plan through `PlanRequest` with `plan`'s options (they planned the default policy, or a config
    whose unnamed layers followed it): the same layers in the same formats."""
    from ttplan.bench.lowerings import layer_groups
    from ttplan.bench.model import prepare

    choices = {"config_path": str(CONFIG), "unnamed": "policy", "policy": {"rank": 4}}
    plan = layer_formats(planned(["resnet20", "--config", CONFIG, "--unnamed", "policy", "--rank", "4"]))
    grouped = {name: group.fmt.to_dict() for group in layer_groups("resnet20", 1, choices) for name in group.names}
    assert grouped == {name: {k: v for k, v in fmt.items() if k != "tt_shapes"} for name, fmt in plan.items()
                       if fmt is not None}
    bench = prepare("resnet20", choices=choices, batch=1, threads=1, objective="macs", profile=MAC_PROFILE)
    assert {layer.name: layer.fmt for layer in bench.plan.layers} == {
        layer.name: layer.fmt for layer in run_request(PlanRequest.with_choices("resnet20", choices)).plan.layers}
    assert any(layer.decomposed for layer in bench.plan.layers)
    # with no choices, the plan of the default policy it made before (`plan_architecture` with `Policy()`)
    default = prepare("resnet20", batch=2, threads=1, objective="latency", profile=MAC_PROFILE)
    before = plan_architecture("resnet20", None, None, Policy(), 2, True, objective="latency", profile=MAC_PROFILE)
    assert default.plan.to_dict() == before.to_dict()
    old = plan_architecture("resnet20", batch=1, fold_weights=True)  # what `bench lowerings` planned before
    assert [(group.names, group.plan.pairs) for group in layer_groups("resnet20", 1)] == [
        (tuple(layer.name for layer in old.layers if layer.decomposed and (layer.spec, layer.fmt) == key),
         next(layer.plan.best.pairs for layer in old.layers if (layer.spec, layer.fmt) == key))
        for key in dict.fromkeys((layer.spec, layer.fmt) for layer in old.layers if layer.decomposed)]


def test_bench_model_takes_plans_options_and_names_them_in_its_report(tmp_path) -> None:
    out = tmp_path / "models.md"
    result = run(["bench", "model", "resnet20", "--config", CONFIG, "--unnamed", "policy", "--rank", "4",
                  "--no-skip-first", "--batch", "1", "--threads", "1", "--rounds", "1", "--objective", "macs",
                  "--out", out])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert (f"`ttplan bench model resnet20 --config {CONFIG} --unnamed policy --rank 4 --no-skip-first --batch 1 "
            "--threads 1") in text
    plan = planned(["resnet20", "--config", CONFIG, "--unnamed", "policy", "--rank", "4", "--no-skip-first"])
    decomposed = sum(fmt is not None for fmt in layer_formats(plan).values())
    assert f"| {decomposed} / {len(plan['layers']) - decomposed} |" in text
