"""Which memory format a latency profile records, and the warning when a plan is for the other one."""

from ttplan.core.latency import LatencyProfile, OpModel
from ttplan.core.memory_format import fitted_channels_last, memory_format_warning
from ttplan.latency.profiles import default_profile

OPS = {"dense:any": OpModel(1.0, 0.0, 1.0)}


def _profile(label: str) -> LatencyProfile:
    return LatencyProfile(label, "cpu", 2, "test", OPS, source="p.json")


def test_the_label_calibrate_writes_records_the_memory_format():
    last = _profile("calibrated on x86_64 CPU (Linux), 2 threads, channels-last, median of 3 rounds")
    nchw = _profile("calibrated on x86_64 CPU (Linux), 2 threads, median of 3 rounds")
    assert fitted_channels_last(last) is True and fitted_channels_last(nchw) is False
    assert fitted_channels_last(_profile("hand-made")) is None


def test_a_mismatch_is_one_line_and_a_match_or_no_record_is_none():
    last = _profile("calibrated on cpu, 2 threads, channels-last, median of 3 rounds")
    line = memory_format_warning(last, channels_last=False)
    assert line is not None and "\n" not in line and "p.json" in line and "`ttplan calibrate`" in line
    assert memory_format_warning(last, channels_last=True) is None
    assert memory_format_warning(_profile("hand-made"), channels_last=True) is None
    assert memory_format_warning(default_profile(), channels_last=True) is None  # the stand-in, labelled as such
