"""The adapter arguments every tool that loads a policy takes (`vla-eval sim|bag`,
`vla-ros demo|replay`), turned into `load_policy`'s keyword arguments, so a model named in
one word on the command line loads as it does from the node's parameters."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vla_pruned_ros.models.registry import PRESETS


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="embedded",
                        help=f"{' | '.join(PRESETS)} or a user's class as module:Class "
                        "(default: embedded, or the preset an artifact names)")  # fmt: skip
    parser.add_argument("--adapter-options", default="", metavar="YAML",
                        help="the adapter's options: a YAML/JSON mapping, or a file holding one "
                        "(action_map, rules, prompt, ...)")  # fmt: skip
    parser.add_argument("--unnorm-key", default="",
                        help="openvla: the dataset whose action statistics apply")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the checkpoint's own code (never the default)")  # fmt: skip


def adapter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """load_policy(..., **adapter_kwargs(args))."""
    from vla_pruned_ros.models.adapters import adapter_options

    text = args.adapter_options
    if text and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text()
    return {"adapter": args.adapter,
            **adapter_options(text, args.unnorm_key, args.trust_remote_code)}  # fmt: skip
