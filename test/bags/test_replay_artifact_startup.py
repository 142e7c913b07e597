"""Offline replay of a compressed artifact whose instructions are cached starts from the
artifact's vision stem and heads alone (`embedded_artifact.load_embedded_vision_artifact`): in
a fresh interpreter `vla-eval bag`'s replay never imports transformers (nor rclpy, Ray or
matplotlib before its report), and gives the actions, report and PolicyInfo of a replay that
loads the whole artifact. With the cache off it loads the whole artifact, still without
transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vla_pruned_ros.evaluation.bag_replay import evaluate_bag
from vla_pruned_ros.models.instruction_cache import InstructionCache
from vla_pruned_ros.models.registry import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_results import untimed  # noqa: E402

BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "nav"

# The replay `vla-eval bag BAG --model ART` runs (bag_fleet.replay_one: evaluate_bag with
# replay_loader), with every model output kept; then what had been imported.
CHILD = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads({threads})
from vla_pruned_ros.evaluation import bag_fleet
from vla_pruned_ros.models import batch
outputs, predict = [], batch.predict_batch
def kept(*args):
    out = predict(*args)
    outputs.append(out.tolist())
    return out
batch.predict_batch = kept
result = bag_fleet.replay_one(Path({bag!r}), [{art!r}], None, None, {{}})
print(json.dumps({{"modules": {{m: m in sys.modules for m in
                   ("transformers", "rclpy", "ray", "matplotlib")}},
                  "outputs": outputs, "result": result}}))
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Two artifacts whose pruned layers are in the text encoder and in the vision stem and
    heads (a few layers each, so that building them is quick)."""
    from vla_pruned_ros.compression import gluestick, prune
    from vla_pruned_ros.models.embedded import load_embedded
    from vla_pruned_ros.models.embedded_artifact import save_embedded_artifact

    root = tmp_path_factory.mktemp("artifacts")
    dense = load_embedded()
    some = ["text.encoder.layer.0.*", "text.encoder.layer.5.output.dense", "blocks.*.film",
            "heads.nav.0"]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the SVDs: 0.5 s here, 23 s on 2 threads beside a busy core
    try:
        nm = prune(dense, "magnitude", "2:4", include=some)
        # unstructured, float32 factors (stored fp16), pruned convs (which stay materialized)
        convs = prune(dense, "magnitude", "unstructured:0.5", conv=True,
                      include=["text.encoder.layer.1.*", "blocks.1.conv", "blocks.2.*"],
                      )  # fmt: skip
        return {
            "2:4 r16": save_embedded_artifact(
                gluestick(dense, nm, 16, factor_dtype="float16"), root / "nm_r16"
            ),
            "unstructured conv r8": save_embedded_artifact(
                gluestick(dense, convs, 8, factor_dtype="float32"), root / "u_conv_r8"
            ),
        }
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", [None, "materialize"])
@pytest.mark.parametrize("kind", ["2:4 r16", "unstructured conv r8"])
def test_the_vision_only_load_is_the_whole_artifact_less_its_encoder(artifacts, kind, mode):
    from vla_pruned_ros.compression.runtime_modes import runtime_summary
    from vla_pruned_ros.models import embedded_artifact as ea

    vision, info, runtime = ea.load_embedded_vision_artifact(artifacts[kind], mode=mode)
    whole = ea.load_embedded_artifact(artifacts[kind], mode=mode)
    assert vision.text is None
    # the whole model's PolicyInfo (memory_bytes worked out from headers) and runtime modes
    assert info == ea.artifact_info(whole)
    assert runtime == runtime_summary(whole).modes
    assert vision.artifact["layer_modes"] == {
        k: v for k, v in whole.artifact["layer_modes"].items() if not k.startswith("text.")
    }
    ours = vision.state_dict()
    theirs = {k: v for k, v in whole.state_dict().items() if not k.startswith("text.")}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8, generator=g)
    text = torch.randn(8, 384, generator=g)
    with torch.inference_mode():
        for task in ("nav", "manip"):
            assert torch.equal(vision.act_from_features(frames, text, task),
                               whole.act_from_features(frames, text, task))  # fmt: skip


def test_warm_artifact_replay_imports_no_transformers(artifacts, tmp_path, monkeypatch):
    from vla_pruned_ros.models import batch

    art = str(artifacts["2:4 r16"])
    outputs, predict = [], batch.predict_batch

    def kept(*args):
        out = predict(*args)
        outputs.append(out.tolist())
        return out

    monkeypatch.setattr(batch, "predict_batch", kept)  # evaluate_bag imports it at call time
    plain = evaluate_bag(BAG, [art], progress=False,
                         loader=lambda name, task: load_policy(name, task))  # fmt: skip
    monkeypatch.setattr(batch, "predict_batch", predict)
    policies = []

    def cold(name: str, task: str):
        policies.append(load_policy(name, task, instruction_cache=InstructionCache(tmp_path)))
        return policies[-1]

    first = evaluate_bag(BAG, [art], progress=False, loader=cold)  # stores the features
    assert policies[0].model.text is None and policies[0]._encoder is not None
    assert untimed(first) == untimed(plain)

    code = CHILD.format(threads=torch.get_num_threads(), bag=str(BAG), art=art)
    for cache in (str(tmp_path), "off"):
        monkeypatch.setenv("VLA_INSTRUCTION_CACHE", cache)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120)  # fmt: skip
        child = json.loads(done.stdout.strip().splitlines()[-1])
        assert child["modules"] == {"transformers": False, "rclpy": False, "ray": False,
                                    "matplotlib": False}, cache  # fmt: skip
        assert untimed(child["result"]) == untimed(plain)
        assert child["result"]["models"][art]["steps"] >= 100
        # every action, bit for bit, as the whole artifact computes it
        assert child["outputs"] == outputs
