"""Session-wide test environment: an isolated ROS graph per test run.

Every run gets its own ROS_DOMAIN_ID so concurrent runs (CI, a developer's shell) never see each
other's nodes, and DDS discovery stays on the loopback interface.
"""

import os
import random

from vla_pruned_ros.ros.dds import use_localhost_profile

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 200))
use_localhost_profile()  # loopback-only discovery, shared-memory data (see ros/dds.py)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
