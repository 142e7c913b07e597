"""`vla-bag info` on a committed fixture bag: the one reader's summary, printed without rclpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vla_pruned_ros.bags.reader import BagReader

BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "manip"


def test_info_prints_the_readers_summary_without_importing_rclpy() -> None:
    code = ("import sys; from vla_pruned_ros.cli.bag import main; rc = main(['info', "
            f"{str(BAG)!r}]); print('rclpy' in sys.modules); sys.exit(rc)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    *lines, imported = done.stdout.strip().splitlines()
    assert imported == "False"
    with BagReader(BAG) as reader:
        start, end = reader.span_ns()
        topics = reader.topics
        total = sum(t.count for t in topics.values())
    assert lines[1].split() == ["duration:", f"{(end - start) / 1e9:.3f}", "s", "messages:",
                                str(total)]  # fmt: skip
    rows = {r.split()[0]: (r.split()[1], int(r.split()[2])) for r in lines[2:]}
    assert rows == {t.name: (t.msgtype, t.count) for t in topics.values()}
    assert rows["/vla/action"][1] > 0
