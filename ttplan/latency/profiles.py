"""The one owner of latency profile files: which file a command reads, the user's cached ones, the committed
default, and writing one.

The default-profile rule lives in one function, `load_profile`: a given file (`--profile FILE`); else, where the
command chooses anything by predicted time (`by_time`), this user's calibrated profile in the cache
(`$XDG_CACHE_HOME/ttplan/profile.json`, per device; for a channels-last model `profile-channels-last.json` first);
else the committed default (`ttplan/core/default_profile.json`, labelled as the default). Without `by_time` (orders
by MACs or memory) the committed default only prices the report's ms columns, so the user's cached profile is
never read and a bad one cannot break such a plan. Commands (`ttplan.cli`, and `PlanRequest`, which resolves a
planning command once) call it once and pass the profile down; the library's planning functions take a profile
and never read one. A test keeps every other module of the package from reading a profile file.
Torch-free.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ttplan.core.latency import LatencyProfile
from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text, cache_dir, read_user_json

#: what a profile file must be, in the one-line errors about one
PROFILE = "a latency profile (JSON written by `ttplan calibrate`)"
#: the committed default profile: a data file of the core, which the latency model it parameterises lives in
DEFAULT_PACKAGE, DEFAULT_NAME = "ttplan.core", "default_profile.json"


def user_profile_path(device: str = "cpu", channels_last: bool = False) -> Path:
    """Where `ttplan calibrate` saves the profile of `device` by default (`--channels-last`: its own file)."""
    name = "profile" + ("" if device == "cpu" else f"-{device}") + ("-channels-last" if channels_last else "")
    return cache_dir() / f"{name}.json"


def default_profile_path() -> Path:
    """The committed default profile in this installation (`ttplan calibrate --as-default` rewrites it)."""
    return Path(str(resources.files(DEFAULT_PACKAGE).joinpath(DEFAULT_NAME)))


def default_profile() -> LatencyProfile:
    """The committed profile (measured on the project's 2-core development machine), labelled as the default."""
    text = resources.files(DEFAULT_PACKAGE).joinpath(DEFAULT_NAME).read_text(encoding="utf-8")
    return LatencyProfile.from_dict(json.loads(text), "ttplan/core/default_profile.json")


def load_profile(path: str | Path | None = None, device: str = "cpu", channels_last: bool = False, *,
                 by_time: bool = True) -> LatencyProfile:
    """The profile a command uses (the rule in the module docstring): the given file; else, `by_time`, this user's
    calibrated one for `device` (with `channels_last`, the channels-last one first), else the committed default.
    Every field is checked (`LatencyProfile.from_dict`); a bad file is one line naming it, and for the cached one,
    how to recalibrate or remove it."""
    if path is None:
        if not by_time:
            return default_profile()
        cached = [user_profile_path(device, last) for last in ((True, False) if channels_last else (False,))]
        found = [candidate for candidate in cached if candidate.is_file()]
        if not found:
            return default_profile()
        hint = f"; it is ttplan's cached profile: recalibrate with `ttplan calibrate`, or remove {found[0]}"
        return _read_profile(found[0], "cached latency profile", hint)
    path = Path(path)
    if not path.exists():
        raise TTPlanError(f"--profile {path}: no such file; run `ttplan calibrate --profile {path}` to make one")
    return _read_profile(path, "--profile", "")


def _read_profile(path: Path, what: str, hint: str) -> LatencyProfile:
    """Read and check one profile file: UTF-8, JSON, then every field."""
    data = read_user_json(path, what, PROFILE + hint)
    return LatencyProfile.from_dict(data, str(path), what=what, hint=hint)


def save_profile(profile: LatencyProfile, path: str | Path) -> Path:
    """Write `profile` as JSON atomically (temporary file, then renamed; parents created); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(profile.to_dict(), indent=1) + "\n")
    return path


__all__ = ["PROFILE", "default_profile", "default_profile_path", "load_profile", "save_profile",
           "user_profile_path"]
