"""`models.batch.reuse_freed_memory` (called by offline replay): in a fresh interpreter, a batched
forward of the embedded VLA stops faulting its feature maps in afresh once it is called, and
gives the same bits as before."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, resource, torch
torch.set_num_threads(1)
from vla_pruned_ros.models.batch import reuse_freed_memory
from vla_pruned_ros.models.embedded_io import load_embedded_vision
model, _ = load_embedded_vision()
g = torch.Generator().manual_seed(0)
frames = torch.randint(0, 256, (32, 64, 64, 3), dtype=torch.uint8, generator=g)
text = torch.randn(32, 384, generator=g)

def run():
    with torch.inference_mode():
        for _ in range(2):
            model.act_from_features(frames, text, "nav")
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            out = model.act_from_features(frames, text, "nav")
        return out, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

before, faults_before = run()
changed = reuse_freed_memory()
after, faults_after = run()
print(json.dumps({"changed": changed, "same": torch.equal(before, after),
                  "before": faults_before, "after": faults_after}))
"""


def test_freed_memory_is_reused_with_the_same_actions() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          check=True, timeout=300)  # fmt: skip
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["changed"] is True  # glibc, as on every machine this package targets
    assert r["same"] is True
    # ~2,500 minor faults per 32-frame forward with glibc's defaults, none once reused
    assert r["before"] > 500
    assert r["after"] < r["before"] / 10
