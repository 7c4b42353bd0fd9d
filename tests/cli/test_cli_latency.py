"""The time-aware options: --objective, --profile, --skip-slower, --target-speedup, --autotune, and calibrate."""

import json
import os

import pytest

from tests.helpers.cli import GEOMETRY, one_line_error, run
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency.profiles import save_profile

HODEC = ["--tt-shapes", "4,8,8,9,4,4,8", "--ranks", "1,16,16,16,16,16,16,1"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's real cache (profiles, autotune results)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def overhead_profile(path):
    """A profile where each op costs 1 ms whatever its size: the fewest ops win."""
    ops = {f"{k}:any": OpModel(1000.0, 0.0, 1e-6) for k in ("feature", "conv", "weight")}
    ops["dense:any"] = OpModel(0.0, 0.0, 1e-6)
    save_profile(LatencyProfile("flat", "cpu", 1, "test", ops), path)
    return str(path)


def mac_profile(path):
    """A profile where time is proportional to MACs (1 us per million): predicted speedups equal MAC ratios."""
    ops = {f"{k}:any": OpModel(0.0, 0.0, 1.0) for k in ("feature", "conv", "weight", "dense")}
    save_profile(LatencyProfile("macs", "cpu", 1, "test", ops), path)
    return str(path)


def test_layer_objective_latency_minimises_predicted_time(tmp_path):
    profile = overhead_profile(tmp_path / "p.json")
    macs = json.loads(run(["layer", *GEOMETRY, *HODEC, "--batch", "8", "--json", "--profile", profile]).output)
    fast = json.loads(run(["layer", *GEOMETRY, *HODEC, "--batch", "8", "--json", "--profile", profile,
                           "--objective", "latency"]).output)
    assert fast["objective"] == "latency" and macs["objective"] == "macs"
    assert fast["best"]["predicted_ms"] <= macs["best"]["predicted_ms"]
    assert fast["best"]["macs"] >= macs["best"]["macs"]


def test_layer_table_shows_predicted_ms():
    result = run(["layer", *GEOMETRY, *HODEC])
    assert result.exit_code == 0
    assert "pred ms" in result.output and "default latency profile" in result.output


def test_bad_objective_and_profile_are_one_line_errors(tmp_path):
    assert "Invalid value for '--objective'" in run(["layer", *GEOMETRY, *HODEC, "--objective", "fast"]).output
    line = one_line_error(run(["layer", *GEOMETRY, *HODEC, "--profile", str(tmp_path / "none.json")]))
    assert "no such file" in line


def test_plan_skip_slower_keeps_slower_layers_dense(tmp_path):
    profile = overhead_profile(tmp_path / "p.json")  # the dense conv is nearly free: every TT layer is slower
    result = run(["plan", "resnet20", "--objective", "latency", "--profile", profile, "--json"])
    data = json.loads(result.output)
    convs = [row for row in data["layers"] if row["kind"] == "conv" and row["dense_reason"] != "first conv"]
    assert convs and all(not row["decomposed"] and "--skip-slower" in row["dense_reason"] for row in convs)
    kept = json.loads(run(["plan", "resnet20", "--objective", "latency", "--no-skip-slower", "--profile", profile,
                           "--json"]).output)
    assert any(row["decomposed"] and row["slower_than_dense"] for row in kept["layers"])


def test_plan_target_speedup_meets_the_predicted_speedup(tmp_path):
    result = run(["plan", "resnet20", "--target-speedup", "1.3", "--objective", "latency", "--fold-weights",
                  "--batch", "32", "--json", "--profile", mac_profile(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["budget"]["met"] and data["budget"]["predicted_speedup"] >= 1.3
    assert data["totals"]["predicted_ms"]["speedup"] == pytest.approx(data["budget"]["predicted_speedup"])
    both = run(["plan", "resnet20", "--target-speedup", "1.3", "--target-macs-reduction", "0.5"])
    assert "give one" in one_line_error(both)


def test_emit_arch_with_latency_objective_runs(tmp_path):
    out = tmp_path / "tt.py"
    result = run(["emit", "--arch", "resnet20", "--objective", "latency", "--fold-weights", "--batch", "8",
                  "--profile", mac_profile(tmp_path / "p.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted" in result.output and out.exists()


def test_layer_autotune_times_candidates_and_caches_them(tmp_path):
    from ttplan.runtime.kernels import kernel_status

    args = ["layer", "-i", "16", "-o", "16", "-p", "1", "--input-size", "8", "--rank", "4", "--fold-weights",
            "--batch", "2", "--autotune", "--json"]
    first = json.loads(run(args).output)["autotune"]
    assert first["source"] == "measured" and first["timings"][0]["dense"]
    # NCHW models: NCHW lowerings, and the fused kernel for the orders it runs (where it is built here)
    fused = {"bmm+fused"} if kernel_status().available else set()
    assert {row["lowering"] for row in first["timings"]} == {"bmm", "conv", *fused}
    assert all(row["label"] in ("merged", "latency", "macs", "memory") for row in first["timings"] if row["fused"])
    again = json.loads(run(args).output)["autotune"]
    assert again["source"] == "cached" and again["best"] == first["best"]


def test_layer_autotune_for_a_channels_last_model_times_nhwc_lowerings_and_the_merged_order(tmp_path):
    """`emit --channels-last --autotune` measures on a channels-last input in the NHWC lowerings, offers the merged
    order beside the searched ones, caches apart from the NCHW run, and the emitted layer runs NHWC."""
    from ttplan.core.formats import make_format
    from ttplan.core.spec import ConvSpec
    from ttplan.latency.autotune import autotune_layer
    from ttplan.latency.profiles import default_profile
    from ttplan.runtime.lowering import NHWC_LOWERINGS

    spec = ConvSpec.make(16, 16, 3, 1, 1, input_size=8)
    fmt = make_format("hodec", spec, rank=4)
    profile = default_profile()
    nhwc = autotune_layer(spec, fmt, 2, True, profile=profile, channels_last=True, rounds=1)
    assert {t.lowering for t in nhwc.timings if t.plan is not None} == set(NHWC_LOWERINGS)
    assert "merged" in {t.label for t in nhwc.timings}
    nchw = autotune_layer(spec, fmt, 2, True, profile=profile, rounds=1)
    assert nchw.source == "measured" and not any(t.lowering.channels_last for t in nchw.timings)
    assert autotune_layer(spec, fmt, 2, True, profile=profile, channels_last=True, rounds=1).source == "cached"
    out = tmp_path / "layer.py"
    args = ["emit", "-i", "16", "-o", "16", "-p", "1", "--input-size", "8", "--rank", "4", "--fold-weights",
            "--batch", "2", "--channels-last", "--out", str(out)]
    assert run(args).exit_code == 0
    source = out.read_text()
    assert "x = x.permute(0, 2, 3, 1)" in source and "on channels-last maps" in source


def test_calibrate_check_runs_on_a_given_profile(tmp_path, monkeypatch):
    from ttplan.latency import calibrate as module

    rows = [module.CheckRow("one", 1, 1.0, 1.1, 2.0, 2.0), module.CheckRow("two", 1, 1.0, 0.5, 2.0, 4.0)]
    monkeypatch.setattr(module, "check", lambda *a, **k: module.CheckResult(rows))
    result = run(["calibrate", "--check", "--profile", overhead_profile(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "median relative error 29.5%" in result.output and "worst 100.0%" in result.output


def test_objective_choices_are_the_registry():
    from ttplan.cli.objective_options import OBJECTIVE_NAMES
    from ttplan.core.objectives import OBJECTIVES

    assert OBJECTIVE_NAMES == tuple(OBJECTIVES)


def test_emit_says_why_nothing_is_decomposed_when_every_layer_is_slower(tmp_path):
    profile = overhead_profile(tmp_path / "p.json")
    line = one_line_error(run(["emit", "--arch", "resnet20", "--objective", "latency", "--profile", profile,
                               "--out", str(tmp_path / "tt.py")]))
    assert "predicted slower than its dense conv at batch 1" in line and "--no-skip-slower" in line


def test_plan_channels_last_with_a_budget_is_a_one_line_error():
    one_line_error(run(["plan", "resnet20", "--channels-last", "--target-macs-reduction", "0.5"]),
                   "--channels-last applies to policy and config plans")


def bad_profile(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


NEGATIVE = json.dumps({"label": "neg", "device": "cpu", "threads": 1, "torch": "x",
                       "ops": {f"{k}:any": {"overhead_us": 1.0, "us_per_mb": 0.0, "us_per_mmac": -1.0}
                               for k in ("feature", "conv", "weight", "dense")}}).encode()


@pytest.mark.parametrize("command", [
    ["layer", *GEOMETRY, *HODEC],
    ["plan", "resnet20", "--objective", "latency"],
    ["plan", "resnet20", "--target-speedup", "1.5"],
    ["sweep", *GEOMETRY, "--ranks", "4"],
    ["emit", "-i", "8", "-o", "8", "--rank", "2", "--objective", "latency"],
    ["emit", "--arch", "resnet20", "--objective", "latency"],
    ["calibrate", "--check"],
], ids=lambda command: command[0] + ("-arch" if "--arch" in command else "-speedup" if "--target-speedup" in command
                                     else ""))
@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
    (NEGATIVE, "us_per_mmac is -1.0: expected a finite number >= 0"),
    (NEGATIVE.replace(b"-1.0", b"NaN"), "us_per_mmac is nan"),
], ids=["binary", "negative", "nan"])
def test_a_bad_profile_is_one_line_naming_the_file_and_field(tmp_path, command, content, words):
    profile = bad_profile(tmp_path / "bad.json", content)
    line = one_line_error(run([*command, "--profile", profile]), words)
    assert line.startswith(f"Error: --profile {profile!r}")


def test_a_corrupt_cached_profile_breaks_no_macs_plan_and_is_named_as_the_cache(tmp_path):
    cached = tmp_path / "cache" / "ttplan" / "profile.json"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"{not json")
    result = run(["plan", "resnet20"])  # fewest MACs: no profile is read, the default one prices the ms column
    assert result.exit_code == 0, result.output
    line = one_line_error(run(["plan", "resnet20", "--objective", "latency"]), "cached latency profile",
                          str(cached), "is not valid JSON", "recalibrate with `ttplan calibrate`, or remove")
    assert "--profile" not in line


@pytest.mark.parametrize("where", ["profile_under_a_file", "profile_a_fifo", "cache_home_a_file"])
def test_calibrate_checks_where_it_writes_before_timing_anything(tmp_path, monkeypatch, where):
    from ttplan.latency import calibrate as module

    def timed(*args, **kwargs):
        raise AssertionError("calibrate started timing before checking its output path")

    monkeypatch.setattr(module, "calibrate", timed)
    (tmp_path / "plain").write_text("x")
    args = ["calibrate", "--rounds", "1"]
    if where == "profile_under_a_file":
        args += ["--profile", str(tmp_path / "plain" / "p.json")]
        needles = ["--profile", "is a file, not a folder"]
    elif where == "profile_a_fifo":
        os.mkfifo(tmp_path / "fifo")
        args += ["--profile", str(tmp_path / "fifo")]
        needles = ["--profile", "is a FIFO"]
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "plain"))
        needles = ["default path", "XDG_CACHE_HOME", str(tmp_path / "plain"), "is a file, not a folder"]
    one_line_error(run(args), *needles)
def test_plan_budget_applies_skip_slower(tmp_path):
    """A budget ignored --skip-slower (issue #25, item 19): with every TT layer predicted slower than its dense conv
    it still decomposed them. Now, on by default with --objective latency, it keeps them dense; --no-skip-slower
    lets the budget take them."""
    profile = overhead_profile(tmp_path / "p.json")  # the dense conv is nearly free: every TT layer is slower
    args = ["plan", "resnet20", "--target-params-reduction", "0.3", "--objective", "latency", "--profile", profile,
            "--json"]
    skipped = json.loads(run(args).stdout)
    searched = [row for row in skipped["layers"] if row["source"] == "budget"]
    assert searched and not any(row["decomposed"] for row in searched)
    kept = json.loads(run([*args, "--no-skip-slower"]).stdout)
    assert any(row["decomposed"] and row["slower_than_dense"] for row in kept["layers"])


def _labelled_profile(path, label: str) -> str:
    """A profile with the label `ttplan calibrate` writes (which records the memory format it was fitted on)."""
    ops = {f"{k}:any": OpModel(1.0, 0.0, 1.0) for k in ("feature", "conv", "weight", "dense")}
    save_profile(LatencyProfile(label, "cpu", 1, "test", ops), path)
    return str(path)


def test_a_profile_for_the_other_memory_format_is_warned_about(tmp_path):
    """A channels-last profile planned NCHW layers (and vice versa) without a word (issue #25, item 20): now one
    warning line on stderr; a profile of the plan's own format, or one that records none, passes silently."""
    last = _labelled_profile(tmp_path / "last.json",
                             "calibrated on test CPU, 1 thread, channels-last, median of 1 round")
    nchw = _labelled_profile(tmp_path / "nchw.json", "calibrated on test CPU, 1 thread, median of 1 round")
    unknown = _labelled_profile(tmp_path / "mine.json", "hand-made")
    result = run(["layer", *GEOMETRY, *HODEC, "--profile", last])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fitted on channels-last maps" in warnings[0] and "NCHW model" in warnings[0]
    assert run(["layer", *GEOMETRY, *HODEC, "--profile", nchw]).stderr == ""
    assert run(["layer", *GEOMETRY, *HODEC, "--profile", unknown]).stderr == ""
    planned = run(["plan", "resnet20", "--channels-last", "--profile", nchw])
    assert planned.exit_code == 0 and "warning: latency profile" in planned.stderr
    assert "fitted on NCHW maps" in planned.stderr and "ttplan calibrate --channels-last" in planned.stderr
    assert "warning" not in run(["plan", "resnet20", "--channels-last", "--profile", last]).stderr


def test_a_profile_calibrated_on_another_machine_is_warned_about(tmp_path):
    """A profile copied from another machine (or the committed one of another CPU) plans by times this machine does
    not take: `plan`, `layer` and `emit` say so in one warning line, and a profile of this machine passes silently."""
    from ttplan.latency.machine import identity

    ops = {f"{k}:any": OpModel(1.0, 0.0, 1.0) for k in ("feature", "conv", "weight", "dense")}
    label = "calibrated on elsewhere, 1 thread, median of 1 round"
    other, here = tmp_path / "other.json", tmp_path / "here.json"
    save_profile(LatencyProfile(label, "cpu", 1, "test", ops, machine="Another CPU (family 6, model 143), AVX512"),
                 other)
    save_profile(LatencyProfile(label, "cpu", 1, "test", ops, machine=identity("cpu")), here)
    for args in (["plan", "resnet20", "--objective", "latency"], ["layer", *GEOMETRY, *HODEC],
                 ["emit", *GEOMETRY, *HODEC, "--out", str(tmp_path / "layer.py")]):
        result = run([*args, "--profile", str(other)])
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "calibrated on Another CPU" in warnings[0], (args, result.stderr)
        assert identity("cpu") in warnings[0]
        assert "warning" not in run([*args, "--profile", str(here)]).stderr
