"""Which machine a timing was taken on: the CPU named by model, family and model numbers and torch's vector
instructions, the same in reports, profile labels and autotune's cache keys."""

from __future__ import annotations

import platform

import torch

from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency import machine

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu avx avx2

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 9
model name\t: Another CPU
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_the_cpu_is_named_by_its_first_processors_model_and_numbers():
    assert machine.cpu_model(ZEN3) == "AMD EPYC (family 25, model 1)"


def test_a_cpuinfo_without_a_model_name_falls_back_to_what_platform_says():
    expected = platform.processor() or platform.machine()
    assert machine.cpu_model(ARM) == expected
    assert machine.cpu_model("") == expected


def test_the_identity_changes_with_the_vector_instructions(monkeypatch):
    monkeypatch.setattr(machine, "cpu_model", lambda cpuinfo=None: "AMD EPYC (family 25, model 1)")
    monkeypatch.setattr(machine, "cpu_capability", lambda: "AVX2")
    avx2 = machine.identity("cpu")
    monkeypatch.setattr(machine, "cpu_capability", lambda: "AVX512")
    assert avx2 == "AMD EPYC (family 25, model 1), AVX2" and machine.identity("cpu") != avx2


def test_a_report_line_names_the_cpu_its_cores_and_torch():
    line = machine.describe("cpu")
    assert line.startswith(machine.identity("cpu")) and "cores visible" in line and torch.__version__ in line
    assert machine.cpu_capability() in line and machine.describe().startswith(line)


def _profile(where: str, label: str = "calibrated on test CPU, 1 thread, median of 1 round") -> LatencyProfile:
    return LatencyProfile(label, "cpu", 1, "test", {"dense:any": OpModel(1.0, 0.0, 1.0)}, source="p.json",
                          machine=where)


def test_a_profile_from_another_machine_is_one_line_naming_both():
    line = machine.machine_warning(_profile("Another CPU (family 6, model 143), AVX512"))
    assert line is not None and "\n" not in line
    assert "'p.json'" in line and "Another CPU (family 6, model 143), AVX512" in line
    assert machine.identity("cpu") in line and "`ttplan calibrate`" in line
    assert machine.machine_warning(_profile(machine.identity("cpu"))) is None
    assert machine.machine_warning(_profile("")) is None  # a profile that does not say is taken as it is


def test_profile_warnings_gives_each_reason_once():
    elsewhere = _profile("Another CPU, AVX512", "calibrated on Another CPU, 1 thread, channels-last, median of 1 round")
    lines = machine.profile_warnings(elsewhere, channels_last=False)
    assert len(lines) == 2 and "channels-last maps" in lines[0] and "Another CPU" in lines[1]
    assert machine.profile_warnings(_profile(machine.identity("cpu")), channels_last=False) == []
