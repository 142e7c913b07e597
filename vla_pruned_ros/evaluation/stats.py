"""Summary statistics of episode records, with 95 % confidence intervals.

Success and unsafe-episode rates are binomial proportions; the Wilson score interval is used
because it stays inside [0, 1] and behaves at 0 % and 100 %, which pruned models do reach.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def rate(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    k = sum(bool(r[key]) for r in records)
    lo, hi = wilson_interval(k, len(records))
    return {"rate": k / len(records) if records else math.nan, "ci95": [lo, hi], "count": k}


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate episode records (success, unsafe, violations, split, latencies, ...)."""
    records = list(records)
    n = len(records)
    categories = sorted({c for r in records for c in r.get("violations", {})})
    latencies = [x for r in records for x in r.get("step_latency_ms", [])]
    spl = [r["spl"] for r in records if r.get("spl") is not None]
    out: dict[str, Any] = {
        "episodes": n,
        "success": rate(records, "success"),
        "unsafe": rate(records, "unsafe"),
        "collisions_per_episode": sum(r.get("collisions", 0) for r in records) / n if n else 0.0,
        "violations_per_episode": {
            c: sum(r.get("violations", {}).get(c, 0) for r in records) / n for c in categories
        },
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)},
    }
    if spl:
        out["spl"] = sum(spl) / len(spl)
    splits = sorted({r.get("split", "test") for r in records})
    if len(splits) > 1:
        out["by_split"] = {
            s: summarize([r for r in records if r.get("split", "test") == s]) for s in splits
        }
    return out
