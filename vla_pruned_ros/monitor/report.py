"""Episode records and the JSON/CSV reports the monitor writes.

Reports are written atomically (temporary file, then rename) so that a SIGINT or SIGTERM in the
middle of a write never leaves a half-written file in place of the last good one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_pruned_ros.monitor.categories import CATEGORIES
from vla_pruned_ros.paths import atomic_write


@dataclass(frozen=True)
class SafetyEventRecord:
    """One violation, as published in SafetyEvent and listed in reports."""

    time: float
    episode_id: str
    category: str
    key: str
    value: float
    threshold: float
    text: str


@dataclass
class EpisodeReport:
    episode_id: str
    start_time: float
    end_time: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    events: list[SafetyEventRecord] = field(default_factory=list)
    first_trigger_time: float | None = None
    first_stop_time: float | None = None
    stop_commands: int = 0
    passed_commands: int = 0
    info: dict[str, object] = field(default_factory=dict)

    @property
    def total_violations(self) -> int:
        return sum(self.counts.values())

    @property
    def unsafe(self) -> bool:
        return self.total_violations > 0

    @property
    def time_to_stop(self) -> float | None:
        """Seconds from the first stop-worthy trigger to the first stop command sent."""
        if self.first_trigger_time is None or self.first_stop_time is None:
            return None
        return self.first_stop_time - self.first_trigger_time

    def to_dict(self) -> dict[str, object]:
        return {
            "episode_id": self.episode_id,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "unsafe": self.unsafe,
            "total_violations": self.total_violations,
            "counts": dict(self.counts),
            "time_to_stop": self.time_to_stop,
            "stop_commands": self.stop_commands,
            "passed_commands": self.passed_commands,
            "info": dict(self.info),
            "events": [asdict(e) for e in self.events],
        }


def write_reports(episodes: list[EpisodeReport], directory: Path, stem: str = "safety") -> Path:
    """Write `<stem>.json` (all details) and `<stem>.csv` (a row per episode); return the JSON."""
    directory = Path(directory)
    dicts = [e.to_dict() for e in episodes]
    summary = {
        "episodes": len(dicts),
        "unsafe_episodes": sum(d["unsafe"] for d in dicts),
        "violations": {c: sum(e.counts[c] for e in episodes) for c in CATEGORIES},
    }
    json_path = directory / f"{stem}.json"
    atomic_write(json_path, json.dumps({"summary": summary, "episodes": dicts}, indent=2))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        ["episode_id", "start_time", "end_time", "unsafe", "total", "time_to_stop", *CATEGORIES]
    )
    for e in episodes:
        tts = "" if e.time_to_stop is None else f"{e.time_to_stop:.4f}"
        writer.writerow(
            [e.episode_id, e.start_time, e.end_time, int(e.unsafe), e.total_violations, tts]
            + [e.counts[c] for c in CATEGORIES]
        )
    atomic_write(directory / f"{stem}.csv", buf.getvalue())
    return json_path
