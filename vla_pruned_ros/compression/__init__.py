"""The compression core (torch only, no ROS).

Here so far: sparsity masks (`patterns`), the rank-r gap correction (`gluestick`), and the fixed
names `prune` (magnitude; unstructured or N:M; include/exclude globs) and `gluestick`. Still to
come (issue 3): Wanda and SparseGPT, randomized SVD, int8 factors, rank policies, artifacts
(`save_artifact`, `load_artifact`) and `memory_report`.
"""

from vla_pruned_ros.compression.prune import gluestick, prune

__all__ = ["gluestick", "prune"]
