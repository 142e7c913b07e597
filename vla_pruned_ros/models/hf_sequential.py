"""Wanda and SparseGPT on a Hugging Face checkpoint too big to load twice, block by block: what
is specific to a checkpoint folder. The model is built on the meta device; only the parts
outside the transformer blocks (embeddings, rotary tables, final norm) are materialised; the
transformer block list is found (`block_list`), calibration inputs come from the checkpoint's
own tokenizer or processor, and `compression.blockwise` does the rest (catching the first
block's inputs, pruning each block in turn, writing through the one artifact writer).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vla_pruned_ros.compression.artifact_layout import DTYPES
from vla_pruned_ros.compression.artifact_write import ArtifactWriter
from vla_pruned_ros.compression.blockwise import (
    catch_inputs,
    compress_blocks,
    sample_inputs,
    write_tensors,
)
from vla_pruned_ros.compression.patterns import parse_pattern
from vla_pruned_ros.compression.prune import correction_record
from vla_pruned_ros.compression.safetensors_io import iter_safetensors, safetensors_keys
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
    attention mask and pixel values from its processor, for a VLA). `correction` as
    `compression.blockwise.compress_blocks` takes it."""
    if not calib:
        raise CheckpointError(f"{method} needs calibration inputs")
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
    original = {rename.get(k, k): k for k in (k for ks in file_keys.values() for k in ks)}

    def fill(wanted: list[str]) -> None:  # these tensors from the shards into the model
        by_file: dict[Path, set[str]] = {}
        for k in wanted:
            by_file.setdefault(keys[k], set()).add(original[k])
        for f, raw_keys in by_file.items():
            for raw, t in iter_safetensors(f, only=raw_keys):
                _set_tensor(model, rename.get(raw, raw), t.float())

    fill(outside)
    _tie_missing(model)
    rebuild_meta_buffers(model, config, skip=prefix)
    caught = catch_inputs(blocks, calib,
                          lambda s: model(**sample_inputs(s), use_cache=False))  # fmt: skip
    if len(caught) != len(calib):
        raise CheckpointError(f"{len(calib) - len(caught)} calibration samples never reached "
                              f"{prefix}.0")  # fmt: skip
    target = DTYPES[weight_dtype] if weight_dtype else None
    with ArtifactWriter(out, overwrite=overwrite, shard_bytes=shard_bytes) as writer:
        tokens = compress_blocks(
            model, prefix, blocks, caught, chosen, keys, fill, writer, method, pattern, rank,
            svd=svd, factor_dtype=factor_dtype, target=target, correction=correction,
            damp=damp, progress=progress,
        )  # fmt: skip
        write_tensors(model, outside, writer, target)
        written = writer.finish(weight_dtype, f"rank:{rank}", {
            "method": method,
            "model_config": json.loads((Path(folder) / "config.json").read_text()),
            "trust_remote_code": trust_remote_code,
            "correction": correction_record(correction, damp, calib_source, tokens),
            "calibration": {"samples": len(calib), "order": "block by block, pruned inputs",
                            "inputs": sorted(dict(calib[0]) if isinstance(calib[0], Mapping)
                                             else ["input_ids"])},
        })  # fmt: skip
    return attach_deployment(written, folder)  # processor, tokenizer, code, source name and sha256


def _tie_missing(model: nn.Module) -> None:
    """Tied output embeddings are stored once: point a still-meta lm_head at the input table."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return
    try:
        inp, outp = get_in(), get_out()
    except NotImplementedError:  # a remote-code model without them (transformers 5 raises)
        return
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
