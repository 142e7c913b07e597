"""The compression core (torch only, no ROS).

    prune(model, method, pattern, calib=None, include=None, exclude=None) -> pruned copy
    gluestick(dense, pruned, rank)       -> copy whose pruned layers carry A (B x) corrections
    save_artifact(model, path, **fields) -> checksummed folder of safetensors + manifest.json
    load_artifact(path, model_factory, mode=None)  -> None/"auto": sparse on CPU, else
                                         "materialize" | "packed" | "semi_structured" | "sparse"
    runtime_summary(model)               -> (modes per layer in one line, resident bytes)
    memory_report(model)                 -> byte counts (dense, packed, factors, resident)

Methods: magnitude, Wanda, SparseGPT; patterns: unstructured fractions and N:M; ranks: an int or
a policy (EnergyRank, BudgetRank, ActivationBudgetRank); corrections: the paper's SVD of the gap or
`gluestick(..., correction="activation", calib=...)`, the output error on calibration inputs.
Everything here imports torch (and safetensors) only.
"""

from vla_pruned_ros.compression.artifact import (
    ArtifactError,
    load_artifact,
    read_manifest,
    runtime_summary,
    save_artifact,
)
from vla_pruned_ros.compression.gluestick import GapFactors, GluestickLinear, gap_factors
from vla_pruned_ros.compression.memory import memory_report
from vla_pruned_ros.compression.patterns import parse_pattern, prune_mask
from vla_pruned_ros.compression.prune import METHODS, gluestick, prune, select_linear
from vla_pruned_ros.compression.rank_policy import (
    ActivationBudgetRank,
    BudgetRank,
    EnergyRank,
    FixedRank,
    parse_rank_policy,
)
from vla_pruned_ros.compression.runtime_modes import MODES

__all__ = [
    "METHODS",
    "MODES",
    "ActivationBudgetRank",
    "ArtifactError",
    "BudgetRank",
    "EnergyRank",
    "FixedRank",
    "GapFactors",
    "GluestickLinear",
    "gap_factors",
    "gluestick",
    "load_artifact",
    "memory_report",
    "parse_pattern",
    "parse_rank_policy",
    "prune",
    "prune_mask",
    "read_manifest",
    "runtime_summary",
    "save_artifact",
    "select_linear",
]
