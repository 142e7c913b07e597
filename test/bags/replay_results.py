"""What two replays of the same bag must agree on: a replay report without its timings."""

from __future__ import annotations

import json

TIMING = ("model_seconds", "realtime_factor")


def untimed(result: dict) -> dict:
    """A copy of `evaluate_bag`'s result with each model's wall-clock fields removed."""
    result = json.loads(json.dumps(result))
    for model in result["models"].values():
        for key in TIMING:
            model.pop(key)
    return result
