"""Whether a state_dict fits a model, said in one phrase. It needs nothing but the tensors' shapes, so generated
files embed this function's source (`inspect.getsource`) and the library calls the same code."""

from __future__ import annotations


def state_mismatch(own: dict, state: dict) -> str:
    """'' where `state` has exactly `own`'s keys and shapes, else what differs, e.g. '1 missing (e.g. a.bias),
    1 of another shape (e.g. b.weight: [1, 1], expected [4, 4]) keys'."""
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
             f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
             f"{len(wrong)} of another shape (e.g. {wrong[0]}: {list(state[wrong[0]].shape)}, expected "
             f"{list(own[wrong[0]].shape)})" if wrong else ""]
    said = ", ".join(part for part in parts if part)
    return said + " keys" if said else ""


__all__ = ["state_mismatch"]
