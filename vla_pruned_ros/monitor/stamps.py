"""The one rule for judging a timestamp against a clock (frames, commands, heartbeats).

A stamp from the future cannot be trusted: a camera whose clock runs ahead would otherwise look
fresh for as long as it is ahead, and one frame stamped far in the future would disable every
timeout that keeps the newest stamp. So a stamp more than `tolerance_s` ahead of `now` is
rejected as clock skew (the caller counts it and ignores the input), never used to extend a
timeout. Every age check in the package goes through `check_stamp`.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOCK_SKEW_TOLERANCE_S = 0.05
"""Default allowance for stamps slightly ahead of the receiver's clock (two hosts' NTP jitter)."""


@dataclass(frozen=True)
class StampCheck:
    """The verdict on one stamp: its age at `now` and whether it may be used."""

    age_s: float  # now - stamp; negative when the stamp is ahead of the clock
    future: bool  # ahead by more than the tolerance: clock skew, the input must be ignored

    @property
    def usable(self) -> bool:
        return not self.future

    def stale(self, max_age_s: float) -> bool:
        """Older than `max_age_s` (a limit of 0 or less disables the check)."""
        return max_age_s > 0 and self.age_s > max_age_s


def check_stamp(
    stamp_s: float, now_s: float, tolerance_s: float = CLOCK_SKEW_TOLERANCE_S
) -> StampCheck:
    """Judge `stamp_s` (seconds) at `now_s` on the same clock; see the module docstring."""
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
    age = now_s - stamp_s
    return StampCheck(age_s=age, future=-age > tolerance_s)
