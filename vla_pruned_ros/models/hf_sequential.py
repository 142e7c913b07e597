"""Wanda and SparseGPT on a checkpoint too big to load twice: block by block, as the authors'
code does. The model is built on the meta device; only the parts outside the transformer blocks
(embeddings, rotary tables, final norm) are materialised. The inputs of the first block are caught
for every calibration sample; then each block in turn is loaded from the shards, its linear
layers' input statistics are gathered on those inputs, the layers are pruned (and corrected),
the block is run again pruned to give the next block its inputs, written, and freed.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact import DTYPES, finalize, new_manifest
from vla_pruned_ros.compression.calibration import InputStats
from vla_pruned_ros.compression.gluestick import corrected_weight, layer_factors
from vla_pruned_ros.compression.memory import unmap_large_allocations
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.prune import correction_record, pruned_weight
from vla_pruned_ros.compression.streaming import (
    iter_safetensors,
    open_writers,
    safetensors_keys,
    write_layer,
)
from vla_pruned_ros.models.hf_checkpoint import (
    CheckpointError,
    architecture,
    attach_deployment,
    checkpoint_files,
    missing_package,
    model_keys,
    rebuild_meta_buffers,
    select,
)


class _Caught(Exception):
    pass


def block_list(model: nn.Module, chosen: Collection[str] = ()) -> tuple[str, nn.ModuleList]:
    """The transformer blocks to prune: of the ModuleLists named `layers` or `layer` (a VLM has
    one in its vision tower too), the one holding most of the chosen layers, then the longest."""
    found = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layers", "layer")
    ]
    if not found:
        raise CheckpointError("no transformer block list (a ModuleList named 'layers' or "
                              "'layer') in this architecture")  # fmt: skip

    def score(nm: tuple[str, nn.ModuleList]) -> tuple[int, int]:
        return sum(c.startswith(f"{nm[0]}.") for c in chosen), len(nm[1])

    return max(found, key=score)


def _set_tensor(model: nn.Module, key: str, value: torch.Tensor) -> None:
    module_name, _, leaf = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value


def sequential_compress(
    folder: Path,
    out: Path,
    method: str,
    pattern: str,
    rank: int,
    calib: Sequence[torch.Tensor | Mapping[str, torch.Tensor]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    svd: str = "randomized",
    factor_dtype: str = "float16",
    weight_dtype: str | None = "float16",
    shard_bytes: int = 64 * 2**20,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    correction: str = "svd",
    damp: float = 0.01,
    calib_source: str = "",
) -> Path:
    """Wanda / SparseGPT (or magnitude) block by block from a local checkpoint folder. Each
    `calib` sample is token ids (1 x T) or the keyword inputs of the model's forward (ids,
    attention mask and pixel values from its processor, for a VLA). With
    `correction="activation"` each layer's factors minimise its output error on the inputs it
    gets from the already-compressed blocks before it (pruned + corrected, factors as stored),
    and those compressed outputs feed the next block; with "svd" the next block sees the
    pruned outputs, as the pruning authors' code does."""
    from tqdm import tqdm

    if not calib:
        raise CheckpointError(f"{method} needs calibration inputs")
    unmap_large_allocations()
    pattern = parse_pattern(pattern)
    files = checkpoint_files(folder)
    config, cls = architecture(folder, trust_remote_code)
    with torch.device("meta"):
        model = cls(config)
    model.eval()
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = set(select(linear, include, exclude))
    prefix, blocks = block_list(model, chosen)
    file_keys = {f: list(safetensors_keys(f)) for f in files}
    rename = model_keys(model, [k for ks in file_keys.values() for k in ks])
    keys = {rename.get(k, k): f for f, ks in file_keys.items() for k in ks}
    outside = [k for k in keys if not k.startswith(f"{prefix}.")]
    stray = sorted(n for n in chosen if not n.startswith(f"{prefix}."))
    if stray:
        raise CheckpointError(f"layer-by-layer {method} prunes only inside {prefix}; exclude "
                              f"{stray[:3]}")  # fmt: skip
    by_file: dict[Path, list[str]] = {}
    for k in outside:
        by_file.setdefault(keys[k], []).append(k)
    original = {rename.get(k, k): k for k in (k for ks in file_keys.values() for k in ks)}
    for f, wanted in by_file.items():
        for raw, t in iter_safetensors(f, only={original[k] for k in wanted}):
            _set_tensor(model, rename.get(raw, raw), t.float())
    _tie_missing(model)
    rebuild_meta_buffers(model, config, skip=prefix)

    caught: list[tuple[tuple, dict]] = []
    first = blocks[0]

    class Catcher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = first

        def forward(self, *args, **kwargs):
            caught.append((args, kwargs))
            raise _Caught

    blocks[0] = Catcher()
    with torch.no_grad():
        for sample in calib:
            inputs = dict(sample) if isinstance(sample, Mapping) else {"input_ids": sample}
            try:
                model(**inputs, use_cache=False)  # no cache: each block runs twice per sample
            except _Caught:
                pass
    if len(caught) != len(calib):
        raise CheckpointError(f"{len(calib) - len(caught)} calibration samples never reached "
                              f"{prefix}.0")  # fmt: skip
    blocks[0] = first

    target = DTYPES[weight_dtype] if weight_dtype else None
    out = Path(out)
    tmp, writers = open_writers(out, overwrite, shard_bytes)
    entries: dict[str, dict[str, Any]] = {}
    kept = total = tokens = 0
    try:
        for i in tqdm(range(len(blocks)), desc=f"{method} {pattern} block", disable=not progress):
            block_prefix = f"{prefix}.{i}."
            block = blocks[i]
            own = [k for k in keys if k.startswith(block_prefix)]
            by_file = {}
            for k in own:
                by_file.setdefault(keys[k], set()).add(k)
            for f, wanted in by_file.items():
                for raw, t in iter_safetensors(f, only={original[k] for k in wanted}):
                    _set_tensor(model, rename.get(raw, raw), t.float())
            names = [n for n in chosen if n.startswith(block_prefix)]
            stats, hooks = {}, []
            for n in names:
                layer = model.get_submodule(n)
                xtx = method == "sparsegpt" or correction == "activation"
                stats[n] = InputStats(layer.in_features, xtx)
                hooks.append(layer.register_forward_hook(
                    lambda _m, inp, _o, s=stats[n]: s.add(inp[0])))  # fmt: skip
            with torch.no_grad():
                for args, kwargs in caught:
                    block(*args, **kwargs)
            for h in hooks:
                h.remove()
            tokens = max((s.count for s in stats.values()), default=tokens)
            for n in sorted(names):
                layer = model.get_submodule(n)
                dense = layer.weight.detach().clone()
                pruned = pruned_weight(dense, method, pattern, stats[n])
                factors = None
                if rank and correction != "svd":
                    stored = (pruned.to(target) if target is not None else pruned).float()
                    factors = layer_factors(dense.float(), stored, rank, correction,
                                            stats[n].xtx, damp, svd=svd)  # fmt: skip
                entry = write_layer(n, dense, pruned, pattern, rank, svd, factor_dtype, target,
                                    writers, method, factors)  # fmt: skip
                entry["bias"] = f"{n}.bias" in keys
                entries[n] = entry
                kept, total = kept + entry["nonzero"], total + dense.numel()
                if factors is not None:  # the next block sees the compressed block's output
                    pruned = corrected_weight(pruned, factors, factor_dtype)
                with torch.no_grad():
                    layer.weight.copy_(pruned)
            with torch.no_grad():
                new = []
                for args, kwargs in caught:
                    result = block(*args, **kwargs)
                    hidden = result[0] if isinstance(result, tuple) else result
                    new.append(((hidden, *args[1:]), kwargs))
                caught = new
            for k in sorted(own):
                name = k.rsplit(".", 1)[0]
                if name in entries and k.endswith(".weight"):
                    continue
                module_name, _, leaf = k.rpartition(".")
                t = getattr(model.get_submodule(module_name), leaf).detach()
                if name in entries and k.endswith(".bias"):
                    writers["pruned"].add(k, t.to(target) if target else t)
                else:
                    writers["weights"].add(k, t.to(target) if target and t.is_floating_point()
                                           else t)  # fmt: skip
            blocks[i] = block.to("meta")
        for k in outside:
            module_name, _, leaf = k.rpartition(".")
            t = getattr(model.get_submodule(module_name), leaf).detach()
            writers["weights"].add(k, t.to(target) if target and t.is_floating_point() else t)
        for w in writers.values():
            w.flush()
        import json

        manifest = new_manifest(entries, kept, total, weight_dtype, [], f"rank:{rank}", {
            "method": method,
            "model_config": json.loads((Path(folder) / "config.json").read_text()),
            "trust_remote_code": trust_remote_code,
            "correction": correction_record(correction, damp, calib_source, tokens),
            "calibration": {"samples": len(calib), "order": "block by block, pruned inputs",
                        "inputs": sorted(dict(calib[0]) if isinstance(calib[0], Mapping)
                                         else ["input_ids"])},
        })  # fmt: skip
        finalize(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return attach_deployment(out, folder)  # processor, tokenizer, code, source name and sha256


def _tie_missing(model: nn.Module) -> None:
    """Tied output embeddings are stored once: point a still-meta lm_head at the input table."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return
    inp, outp = get_in(), get_out()
    if outp is not None and inp is not None and outp.weight.is_meta and not inp.weight.is_meta:
        outp.weight = inp.weight


def calibration_ids(
    folder: Path, texts: Path, trust_remote_code: bool = False, max_tokens: int = 256
) -> list[torch.Tensor]:
    """Token ids of each non-empty line of `texts`, with the checkpoint's own tokenizer."""
    from transformers import AutoTokenizer

    lines = [ln.strip() for ln in Path(texts).read_text().splitlines() if ln.strip()]
    if not lines:
        raise CheckpointError(f"{texts} holds no calibration text")
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                            trust_remote_code=trust_remote_code)  # fmt: skip
    except ImportError as err:
        raise missing_package(f"the tokenizer of {folder}", err) from None
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{folder} has no usable tokenizer for --calib-texts: {err}"
        ) from None
    return [tok(line, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
            for line in lines]  # fmt: skip


def calibration_inputs(
    folder: Path,
    images: Sequence[Any],
    texts: Sequence[str],
    prompt: str,
    trust_remote_code: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """The model's own inputs for each (RGB image, instruction) through the processor saved in
    the checkpoint folder: the image tokens then calibrate the language backbone as they will
    at deployment. `prompt` holds `{instruction}`; a processor with an image placeholder token
    gets it in front when the prompt lacks it."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    if "{instruction}" not in prompt:
        raise CheckpointError(f"calibration prompt {prompt!r} has no {{instruction}} field")
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)  # fmt: skip
    except ImportError as err:
        raise missing_package(f"the processor of {folder}", err) from None
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{folder} has no usable processor for image calibration ({err}); save it next to "
            "the weights (processor.save_pretrained(folder)) or calibrate with --calib-texts"
        ) from None
    if not hasattr(processor, "image_processor"):
        raise CheckpointError(f"{folder}'s processor ({type(processor).__name__}) takes no "
                              "images; calibrate with --calib-texts")  # fmt: skip
    token = getattr(processor, "image_token", None)
    if token and token not in prompt:
        prompt = f"{token}\n{prompt}"
    out = []
    for image, text in zip(images, texts, strict=True):
        words = prompt.format(instruction=text.strip().lower())
        batch = processor(text=words, images=Image.fromarray(np.asarray(image)),
                          return_tensors="pt")  # fmt: skip
        out.append({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    return out
