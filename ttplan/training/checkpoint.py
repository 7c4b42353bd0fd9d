"""Checkpoints of a training run: written atomically, read with `weights_only` loading, checked before use.

A checkpoint is a dict of tensors and plain data (no pickled classes), tagged `kind: ttplan-checkpoint`.
Anything else given where ttplan expects one (another program's torch file, a bare tensor, random bytes)
is refused with one line saying it is not a ttplan checkpoint. The RNG states a checkpoint carries are
saved and restored here too, so a resumed run draws the same numbers as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttplan.core.formats import TTFormat
from ttplan.errors import TTPlanError
from ttplan.files import atomic_torch_save, atomic_write_text

KIND = "ttplan-checkpoint"
VERSION = 3
#: keys every training checkpoint holds (version 3: per-batch schedules, the start accuracy, the teacher)
REQUIRED = ("version", "config", "epoch", "stage", "model", "optimizer", "scheduler", "rng", "epochs", "formats")
#: keys the fine-tuned TT model file holds
TT_MODEL_KEYS = ("model", "formats", "arch", "input_size")


# --- writing ---------------------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, then moved into place: a killed run never leaves half a file."""
    atomic_torch_save(obj, path)


def atomic_write_json(data: Any, path: Path) -> None:
    """JSON (indented, NaN spelled as null) written to a temporary file, then moved into place."""
    atomic_write_text(path, json.dumps(json_ready(data), indent=2) + "\n")


def json_ready(value: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


# --- reading ---------------------------------------------------------------------------------------------------


def load_torch_file(path: Path, what: str) -> Any:
    """A torch file of tensors and plain data (`weights_only=True`); anything unreadable is one line."""
    if not path.exists():
        raise TTPlanError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise TTPlanError(f"{what} {str(path)!r} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise TTPlanError(f"{what} {str(path)!r} is not a ttplan checkpoint (torch cannot read it as tensors "
                          "and plain data)") from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint written by `ttplan train`, checked for the keys resuming needs."""
    data = load_torch_file(path, "checkpoint")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        if isinstance(data, dict) and data.get("version") == 1 and "config" in data:
            raise TTPlanError(f"checkpoint {str(path)!r} was written by an older ttplan (version 1) that did not "
                              "record the layer formats; start the run again with --out")
        raise TTPlanError(f"checkpoint {str(path)!r} is not a ttplan checkpoint (expected the checkpoint.pt "
                          f"of a ttplan train run, got {_describe(data)})")
    missing = [key for key in REQUIRED if key not in data]
    if missing or not _is_state_dict(data["model"]) or not isinstance(data["config"], dict):
        raise TTPlanError(f"checkpoint {str(path)!r} is not a complete ttplan checkpoint (missing or malformed: "
                          f"{', '.join(missing) or 'model/config'})")
    _check_fields(data, path)
    if data["version"] == 2:
        raise TTPlanError(f"checkpoint {str(path)!r} was written by ttplan 0.2, whose schedules stepped once per "
                          "epoch; it cannot continue exactly here: finish it with ttplan 0.2, or start a new run "
                          "from its dense weights with --init (the run folder's dense.pt)")
    if data["version"] != VERSION:
        raise TTPlanError(f"checkpoint {str(path)!r} has version {data['version']!r}; this ttplan reads {VERSION}")
    return data


#: each field of a checkpoint and the type it must have (the model and config are checked above)
FIELD_TYPES = {"version": int, "epoch": int, "stage": str, "optimizer": dict, "scheduler": dict, "rng": dict,
               "epochs": list, "formats": dict}
RNG_KEYS = ("torch", "numpy", "python", "loader")


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Every field a resume reads has its type and its parts: a tampered file is one line naming the field."""
    def bad(field: str, expected: str) -> TTPlanError:
        return TTPlanError(f"checkpoint {str(path)!r} is damaged: its {field!r} is {_describe(data.get(field))}, "
                           f"expected {expected}; start the run again with --out (its dense.pt can be --init)")

    for name, kind in FIELD_TYPES.items():
        value = data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(name, f"a {kind.__name__}")
    if data["epoch"] < 0 or data["epoch"] != len(data["epochs"]):
        raise bad("epoch", f"the number of epoch records ({len(data['epochs'])})")
    if not all(isinstance(e, dict) for e in data["epochs"]):
        raise bad("epochs", "a list of epoch records")
    if any(key not in data["rng"] for key in RNG_KEYS):
        raise bad("rng", "the states of " + ", ".join(RNG_KEYS))
    if data["stage"] not in ("pretrain", "admm", "dense", "finetune"):
        raise bad("stage", "one of pretrain, admm, dense, finetune")
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in data["formats"].items()):
        raise bad("formats", "a dict of layer name -> format")


def load_tt_file(path: Path) -> dict[str, Any]:
    """The fine-tuned TT model file of a run (`model_tt.pt`), checked for the keys rebuilding needs."""
    data = load_torch_file(path, "TT model")
    if not isinstance(data, dict) or any(key not in data for key in TT_MODEL_KEYS) or not _is_state_dict(
            data["model"]) or not isinstance(data["formats"], dict):
        raise TTPlanError(f"TT model {str(path)!r} is not a ttplan checkpoint (expected the model_tt.pt of a "
                          f"ttplan train run, got {_describe(data)})")
    return data


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Dense weights: a bare state_dict, or a ttplan file holding one under `model` (dense.pt, a checkpoint)."""
    data = load_torch_file(path, what)
    state = data.get("model", data) if isinstance(data, dict) else data
    if not _is_state_dict(state):
        raise TTPlanError(f"{what} {str(path)!r} is not a ttplan checkpoint or a state_dict (got "
                          f"{_describe(data)}); give a run folder, its dense.pt, or a model's state_dict")
    return state


def _describe(data: Any) -> str:
    """A few words on what a file held, for error messages."""
    if isinstance(data, torch.Tensor):
        return f"a bare tensor of shape {list(data.shape)}"
    if isinstance(data, dict):
        keys = [str(k) for k in list(data)[:4]]
        return "an empty dict" if not keys else f"a dict with keys {', '.join(keys)}{', ...' if len(data) > 4 else ''}"
    return f"a {type(data).__name__}"


# --- formats as plain data -------------------------------------------------------------------------------------


def format_dict(fmt: TTFormat) -> dict[str, Any]:
    """A format as plain data (`TTFormat.to_dict`)."""
    return fmt.to_dict()


def format_from_dict(data: Any, where: str) -> TTFormat:
    """The inverse of `format_dict`; malformed data is one line naming `where`."""
    try:
        return TTFormat.from_dict(data)
    except TTPlanError as error:
        raise TTPlanError(f"{where}: the recorded format is malformed ({error})") from None


# --- RNG state -------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's random."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the run touches, as tensors and plain ints (safe for `weights_only` loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs now than when saved: leave them be
            torch.cuda.set_rng_state_all(state["cuda"])
