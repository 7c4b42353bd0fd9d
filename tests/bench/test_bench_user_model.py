"""`ttplan bench model MOD:FN --input-size C,H,W` runs on a user's own model (a smoke test, tiny rounds)."""

from __future__ import annotations

import pytest

from tests.helpers.cli import one_line_error, run
from tests.helpers.user_code import INPUT_SIZE, forget, write_user_code
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency.profiles import save_profile

#: time proportional to MACs, so that the latency objective decomposes layers whatever this machine measured
MAC_PROFILE = LatencyProfile("macs", "cpu", 1, "test", {f"{k}:any": OpModel(0.0, 0.0, 1.0)
                                                        for k in ("feature", "conv", "weight", "dense")})


@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name, data = write_user_code(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield name
    forget(name, data)


def test_bench_model_runs_a_user_model_at_its_input_size(net, tmp_path):
    save_profile(MAC_PROFILE, tmp_path / "macs.json")
    out = tmp_path / "models.md"
    result = run(["bench", "model", f"{net}:build", "--input-size", INPUT_SIZE, "--batch", "2", "--threads", "1",
                  "--rounds", "1", "--profile", tmp_path / "macs.json", "--no-fuse", "--out", out])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert f"ttplan bench model {net}:build --input-size {INPUT_SIZE}" in text  # the command that reruns it
    assert f"{net}:build batch 2" in result.stderr


def test_bench_model_of_a_user_model_without_an_input_size_is_one_line(net):
    one_line_error(run(["bench", "model", f"{net}:build", "--rounds", "1"]), "needs --input-size C,H,W")
    one_line_error(run(["bench", "model", f"{net}:build", "--input-size", "12,12", "--rounds", "1"]),
                   "give C,H,W")
