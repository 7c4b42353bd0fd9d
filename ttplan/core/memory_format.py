"""Which memory format a latency profile was fitted for, and the warning when a plan is for the other one.

`ttplan calibrate --channels-last` times channels-last inputs and NHWC programs and says so in the profile's
label (`…, channels-last, …`); a calibrated profile without it was fitted on NCHW maps. A profile whose label
says neither (written by hand or by another tool) records no memory format, and nothing is said about it; nor
about the committed default profile, a stand-in for any machine that reports already label as the default.
"""

from __future__ import annotations

from ttplan.core.latency import LatencyProfile


def fitted_channels_last(profile: LatencyProfile) -> bool | None:
    """True for a profile fitted on channels-last maps, False for NCHW, None where the profile does not record it."""
    if "channels-last" in profile.label:
        return True
    if "calibrated on" in profile.label:
        return False
    return None


def memory_format_warning(profile: LatencyProfile, channels_last: bool) -> str | None:
    """One line when `profile` was fitted for the other memory format than the plan's (`channels_last`), else None."""
    fitted = fitted_channels_last(profile)
    if profile.default or fitted is None or fitted == channels_last:
        return None
    names = {True: "channels-last", False: "NCHW"}
    return (f"latency profile {profile.source or profile.label!r} was fitted on {names[fitted]} maps, but this plan is "
            f"for a {names[channels_last]} model: its predicted times may be off; fit one for it with "
            f"`ttplan calibrate{' --channels-last' if channels_last else ''}`")
