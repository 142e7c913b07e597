"""The compression core (torch only, no ROS): sparsity patterns and GLUESTICK factors.

Started this session: masks (`patterns`) and the rank-r gap correction (`gluestick`). The fixed
API of issue 3 (`prune`, `gluestick`, `save_artifact`, `load_artifact`, `memory_report`) builds
on these and is not here yet.
"""
