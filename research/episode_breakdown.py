"""The failure and safety breakdown MODEL_CARD.md quotes, from a `vla-eval sim` JSON: episodes
that succeed without a violation (all phrasings), episodes with a collision, and how the
failures on training phrasings end (never brought the block closer, or within 12 cm).

    .venv/bin/python research/episode_breakdown.py results/embedded_manip.json
    .venv/bin/python research/episode_breakdown.py A.json B.json   # + which scenes each solves
    git show 1e3e1b8^:results/embedded_manip.json > /tmp/v2.json   # the v2 model's evaluation
"""

from __future__ import annotations

import json
import sys

NEAR = 0.12  # m: a near miss
CLOSER = 0.01  # m: the least progress that counts as moving the block toward the target


def breakdown(episodes: list[dict]) -> dict[str, float | int]:
    train = [e for e in episodes if e["phrasing"] == "train"]
    failures = [e for e in train if not e["success"]]
    return {
        "episodes": len(episodes),
        "success_and_safe": sum(e["success"] and not e["unsafe"] for e in episodes) / len(episodes),
        "train_phrasing_episodes": len(train),
        "with_collision": sum(e["violations"].get("collision", 0) > 0 for e in train),
        "failures": len(failures),
        "never_closer": sum(
            e["distance_to_goal"] >= e["start_distance"] - CLOSER for e in failures
        ),
        "near_miss": sum(e["distance_to_goal"] < NEAR for e in failures),
    }


def solved_by(a: list[dict], b: list[dict]) -> dict[str, int]:
    """Training-phrasing scenes solved by both evaluations, only the first, only the second:
    equal success rates can hide different scenes."""
    won = [{e["seed"] for e in eps if e["phrasing"] == "train" and e["success"]} for eps in (a, b)]
    return {"both": len(won[0] & won[1]), "only_first": len(won[0] - won[1]),
            "only_second": len(won[1] - won[0])}  # fmt: skip


if __name__ == "__main__":
    runs = {}
    for path in sys.argv[1:] or ["results/embedded_manip.json"]:
        with open(path) as f:
            runs[path] = json.load(f)["episodes"]
        print(path, json.dumps(breakdown(runs[path])))
    if len(runs) == 2:
        print("solved scenes", json.dumps(solved_by(*runs.values())))
