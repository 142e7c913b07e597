"""Session-wide test environment: an isolated ROS graph per test run.

Every run gets its own ROS_DOMAIN_ID so concurrent runs (CI, a developer's shell) never see each
other's nodes, and DDS discovery stays on the loopback interface. The offline replay's
instruction cache goes to a folder of this run, so tests neither write into the user's
~/.cache nor read what an earlier run left there.
"""

import os
import random
import tempfile

from vla_pruned_ros.ros.dds import use_localhost_profile

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 200))
use_localhost_profile()  # loopback-only discovery, shared-memory data (see ros/dds.py)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["VLA_INSTRUCTION_CACHE"] = tempfile.mkdtemp(prefix="vla_instruction_cache_")


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 (pytest's hook signature)
    import shutil

    shutil.rmtree(os.environ["VLA_INSTRUCTION_CACHE"], ignore_errors=True)
