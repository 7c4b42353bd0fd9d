"""Which machine a timing was taken on, in one place: the reports' "Machine" lines, a calibrated profile's label
and autotune's cache keys all say it the same way.

A CPU is named by its model, its x86 family and model numbers where /proc/cpuinfo gives them (two generations of
one product line can share a model name: "AMD EPYC"), and the vector instructions torch dispatches to on it
(`torch.backends.cpu.get_cpu_capability()`: AVX512, AVX2, ...). The same layer can run twice as fast on one such
CPU as on another, and which order or lowering wins can change with it, so a timing taken on one is never reused on
another.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ttplan.core.latency import LatencyProfile
from ttplan.core.memory_format import memory_format_warning

#: where Linux describes the processor
CPUINFO = Path("/proc/cpuinfo")


def _fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's `name : value` lines of a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends at a blank line
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model as the system names it, with its family and model numbers where given (x86): "AMD EPYC
    (family 25, model 1)"; else what `platform` says. `cpuinfo`: a /proc/cpuinfo text (None: this machine's)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields = _fields(cpuinfo)
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
               if fields.get(key)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels use here (AVX512, AVX2, DEFAULT, ...), or "unknown"."""
    query = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(query()) if query is not None else "unknown"


def identity(device: str | torch.device = "cpu") -> str:
    """What a timing on `device` depends on besides the software: the CPU's model and vector instructions, or the
    GPU's name. Timings taken under another identity are not reused (autotune's cache)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {cpu_capability()}"


def describe(device: str | torch.device | None = None) -> str:
    """One line for a report: the device's identity, the cores this process may use (a CPU) and torch's version;
    None: the CPU, and the GPU too where there is one."""
    if device is None:
        gpu = f", {identity('cuda')}" if torch.cuda.is_available() else ""
        return f"{describe('cpu')}{gpu}"
    device = torch.device(device)
    cores = "" if device.type == "cuda" else f", {os.cpu_count()} cores visible"
    return f"{identity(device)}{cores}, torch {torch.__version__}"


def machine_warning(profile: LatencyProfile) -> str | None:
    """One line when `profile` was calibrated on another machine than this one (its `machine` differs from this
    machine's identity for its device), else None: its predicted times, and the orders and dense-or-TT choices made
    by them, may not hold here. Profiles that do not say their machine are taken as they are."""
    if not profile.machine or (profile.device == "cuda" and not torch.cuda.is_available()):
        return None
    here = identity(profile.device)
    if profile.machine == here:
        return None
    return (f"latency profile {profile.source or profile.label!r} was calibrated on {profile.machine}, but this "
            f"machine is {here}: its predicted times may not hold here; fit one with `ttplan calibrate`")


def profile_warnings(profile: LatencyProfile, channels_last: bool) -> list[str]:
    """Why `profile`'s predictions may not hold for a plan of this memory format on this machine: one line per reason
    (fitted on the other memory format: `memory_format_warning`; calibrated on another machine: `machine_warning`)."""
    return [line for line in (memory_format_warning(profile, channels_last), machine_warning(profile)) if line]


__all__ = ["CPUINFO", "cpu_capability", "cpu_model", "describe", "identity", "machine_warning", "profile_warnings"]
