"""Offline replay with the on-disk instruction-feature cache (models/instruction_cache.py): the
same bag gives the same actions and metrics with no cache, a cold cache and a warm one, and a
warm replay never loads the text encoder; in a fresh interpreter neither a warm nor an uncached
replay imports transformers (MiniLM is `models.minilm`'s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from vla_pruned_ros.evaluation.bag_replay import evaluate_bag
from vla_pruned_ros.models.instruction_cache import InstructionCache
from vla_pruned_ros.models.registry import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_results import untimed  # noqa: E402

BAG = Path(__file__).resolve().parents[1] / "fixtures" / "bags" / "nav"


def _replay(cache: InstructionCache | None) -> tuple[dict, list]:
    policies = []

    def loader(name: str, task: str):
        policies.append(load_policy(name, task, instruction_cache=cache))
        return policies[-1]

    return evaluate_bag(BAG, ["embedded"], progress=False, loader=loader), policies


def test_cold_and_warm_cache_replay_equal_the_uncached_one(tmp_path, monkeypatch) -> None:
    plain, (eager,) = _replay(None)
    cold_cache = InstructionCache(tmp_path / "cache")
    cold, (cold_policy,) = _replay(cold_cache)
    assert cold_cache.misses >= 1 and cold_cache.hits == 0
    assert cold_policy.model.text is None and cold_policy._encoder is not None  # loaded on a miss
    warm_cache = InstructionCache(tmp_path / "cache")
    warm, (warm_policy,) = _replay(warm_cache)
    assert warm_cache.hits >= 1 and warm_cache.misses == 0
    assert warm_policy._encoder is None and warm_policy._tokenizer is None  # MiniLM never loaded
    assert untimed(cold) == untimed(plain) == untimed(warm)
    assert warm["models"]["embedded"]["steps"] >= 100  # the whole fixture, not a prefix
    # info (memory_bytes included) is the full model's whichever way it was loaded
    assert warm_policy.info == eager.info
    # the features themselves are the encoder's bytes
    text = "drive to the red marker"
    assert torch.equal(warm_policy.text_features(text), eager.text_features(text))

    # a fresh interpreter on the warm cache, and one with the cache off (it loads MiniLM and
    # tokenizes): the same result, transformers never imported
    code = (
        "import json, sys; from pathlib import Path; import torch; torch.set_num_threads("
        f"{torch.get_num_threads()}); from vla_pruned_ros.evaluation.bag_replay import "
        f"evaluate_bag; r = evaluate_bag(Path({str(BAG)!r}), ['embedded'], progress=False); "
        "print(json.dumps({'transformers': 'transformers' in sys.modules, 'result': r}))"
    )
    for cache in (str(tmp_path / "cache"), "off"):
        monkeypatch.setenv("VLA_INSTRUCTION_CACHE", cache)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=300)  # fmt: skip
        child = json.loads(done.stdout.strip().splitlines()[-1])
        assert child["transformers"] is False, cache
        assert untimed(child["result"]) == untimed(plain)


def test_an_entry_is_found_only_under_its_whole_key(tmp_path) -> None:
    cache = InstructionCache(tmp_path)
    key = cache.key({"weights": "abc"}, "go to red", torch.float32, "cpu")
    rows = torch.randn(1, 384)
    cache.put(key, rows)
    assert torch.equal(cache.get(key), rows)
    other = [cache.key({"weights": "abd"}, "go to red", torch.float32, "cpu"),
             cache.key({"weights": "abc"}, "go to red ", torch.float32, "cpu"),
             cache.key({"weights": "abc"}, "go to red", torch.float16, "cpu"),
             {**key, "threads": key["threads"] + 1}]  # fmt: skip
    assert all(cache.get(k) is None for k in other)
    # a damaged entry is recomputed, never trusted
    path = next(tmp_path.rglob("*.feat"))
    path.write_bytes(path.read_bytes()[:-7])
    assert cache.get(key) is None
    path.write_bytes(b'{"key": {}, "dtype": "<f4", "shape": [1, 384]}\n' + rows.numpy().tobytes())
    assert cache.get(key) is None  # another key's bytes at this name
    assert InstructionCache(None).get(key) is None  # the cache turned off
