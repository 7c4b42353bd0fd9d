"""The child process of `ttplan bench model --processes` (`python -m ttplan.bench.model`): a `ChildRequest` as
JSON on stdin, its `ProcessTiming` as JSON on the last line of stdout; a `TTPlanError` is one line and exit 2."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from ttplan.bench.model.measure import end_to_end, prepare
from ttplan.bench.model.processes import ChildRequest, ProcessTiming
from ttplan.core.latency import LatencyProfile
from ttplan.errors import TTPlanError


def run_child(request: ChildRequest) -> ProcessTiming:
    """In this process: build both models as the request says and time them (what a child does)."""
    run = prepare(**request.prepare, profile=LatencyProfile.from_dict(request.profile, "the parent's profile"))
    return ProcessTiming(*end_to_end(run, request.rounds))


def main() -> None:
    """Read the request from stdin, time it, print the timing (or one `Error:` line and exit 2)."""
    request = ChildRequest(**json.loads(sys.stdin.read()))
    try:
        timing = run_child(request)
    except TTPlanError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(asdict(timing)))


if __name__ == "__main__":
    main()
