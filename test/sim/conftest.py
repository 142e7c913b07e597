"""Headless rendering for the simulator tests: EGL (Mesa llvmpipe) works on CPU-only machines;
it must be chosen before mujoco is first imported."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
