"""The compressed artifact, by the names its users import (`compression.artifact.X`).

The format lives in small modules, each with one job:
- `artifact_layout`: format name and version, file names, manifest schema, the per-layer entry,
  checksums and the atomic finalize (the one place that knows the layout);
- `artifact_write`: the one writer (`ArtifactWriter`), `save_artifact`, `attach_files`;
- `artifact_verify`: `read_manifest` and the checks every layer passes before it is trusted;
- `artifact_load`: `load_artifact`;
- `runtime_modes`: which mode each layer takes (`auto` = `sparse` on CPU) and what it holds.
"""

from __future__ import annotations

from vla_pruned_ros.compression.artifact_layout import (
    DTYPES,
    FACTORS,
    FILE_MODE,
    FOLDER_MODE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PRUNED,
    SPECTRA,
    WEIGHTS,
    ArtifactError,
    finalize,
    layer_entry,
    new_manifest,
    sha256_file,
)
from vla_pruned_ros.compression.artifact_layout import canonical as _canonical
from vla_pruned_ros.compression.artifact_load import load_artifact
from vla_pruned_ros.compression.artifact_verify import read_manifest
from vla_pruned_ros.compression.artifact_write import ArtifactWriter, attach_files, save_artifact
from vla_pruned_ros.compression.runtime_modes import (
    AUTO,
    CHOICES,
    MODES,
    RuntimeSummary,
    expected_resident,
    runtime_summary,
)

__all__ = [
    "AUTO",
    "CHOICES",
    "DTYPES",
    "FACTORS",
    "FILE_MODE",
    "FOLDER_MODE",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MODES",
    "PRUNED",
    "SPECTRA",
    "WEIGHTS",
    "ArtifactError",
    "ArtifactWriter",
    "RuntimeSummary",
    "_canonical",
    "attach_files",
    "expected_resident",
    "finalize",
    "layer_entry",
    "load_artifact",
    "new_manifest",
    "read_manifest",
    "runtime_summary",
    "save_artifact",
    "sha256_file",
]
