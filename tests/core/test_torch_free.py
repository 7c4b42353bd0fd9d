"""The planning core imports and plans without torch: formats, networks, the search and the schemes, and a latency
profile is saved (atomically, by ttplan/files.py) and loaded by the profiles' owner (ttplan/latency/profiles.py)."""

import subprocess
import sys

from ttplan.core.formats import format_names, make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec

SCRIPT = """
import sys
sys.modules["torch"] = None  # any import of torch now fails
from ttplan.core.formats import format_names, make_format
from ttplan.core.layer import plan_layer
from ttplan.core.spec import ConvSpec
spec = ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
for name in ("classical", "hodec", "tucker2", "tr"):
    result = plan_layer(spec, make_format(name, spec, rank=16))
    print(name, result.published.macs, result.best.macs, result.best.params)
print(",".join(format_names()))
import os, tempfile
from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.latency.profiles import load_profile, save_profile
path = os.path.join(tempfile.mkdtemp(), "profile.json")
save_profile(LatencyProfile("saved without torch", "cpu", 1, "x", {"dense:any": OpModel(1, 0, 0)}), path)
print(load_profile(path).label)
"""


def test_planning_needs_no_torch():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = ConvSpec.make(128, 256, 3, stride=2, padding=1, input_size=28)
    expected = []
    for name in ("classical", "hodec", "tucker2", "tr"):
        result = plan_layer(spec, make_format(name, spec, rank=16))
        expected.append(f"{name} {result.published.macs} {result.best.macs} {result.best.params}")
    assert done.stdout.splitlines() == [*expected, ",".join(format_names()), "saved without torch"]
