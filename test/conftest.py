"""Session-wide test environment: an isolated ROS graph per test run.

Every run gets its own ROS_DOMAIN_ID so concurrent runs (CI, a developer's shell) never see each
other's nodes, and DDS discovery stays on the loopback interface.
"""

import os
import random

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 200))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
