"""The adapter arguments every tool that loads a policy takes (`vla-eval sim|bag|sweep`,
`vla-ros demo|replay|up`), so a model named in one word on the command line loads as it does
from the node's parameters. Two consumers, one parser:

- a tool that loads the policy in its own process calls `adapter_kwargs(args)`: keyword
  arguments for `models.registry.load_policy` (plain JSON-able values, so a job spec can carry
  them to a worker);
- a tool that starts the policy node calls `adapter_parameters(args)`: the node's parameters
  (`adapter`, `adapter_options` as JSON text, `unnorm_key`, `trust_remote_code`) for the flags
  given, so a bringup file's own values stand where no flag is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vla_pruned_ros.models.registry import EMBEDDED, PRESETS, adapter_problem


def _adapter_name(text: str) -> str:
    """argparse type: a preset or module:Class, refused with the valid names otherwise."""
    problem = adapter_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    """--adapter, --adapter-options, --unnorm-key, --trust-remote-code (all unset by default:
    unset means the artifact's manifest, or the bringup file, decides)."""
    parser.add_argument("--adapter", type=_adapter_name, default=None,
                        help=f"{' | '.join(PRESETS)} or a user's class as module:Class "
                        "(default: embedded, or the preset an artifact names)")  # fmt: skip
    parser.add_argument("--adapter-options", default="", metavar="YAML",
                        help="the adapter's options: a YAML/JSON mapping, or a file holding one "
                        "(action_map, rules, prompt, ...)")  # fmt: skip
    parser.add_argument("--unnorm-key", default="",
                        help="openvla: the dataset whose action statistics apply")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the checkpoint's own code (never the default)")  # fmt: skip


def _options_mapping(text: str) -> dict[str, Any]:
    """--adapter-options as a mapping: the text itself, or the file it names."""
    from vla_pruned_ros.models.adapters import adapter_options

    if text and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text()
    options = adapter_options(text)
    options.pop("trust_remote_code")  # its own flag; adapter_options refuses it in the text
    return options


def adapter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """load_policy(..., **adapter_kwargs(args)). ValueError names a bad option text."""
    from vla_pruned_ros.models.adapters import adapter_options

    options = _options_mapping(args.adapter_options)
    return {"adapter": args.adapter or EMBEDDED,
            **adapter_options(options, args.unnorm_key, args.trust_remote_code)}  # fmt: skip


def adapter_parameters(args: argparse.Namespace) -> dict[str, object]:
    """The policy node's parameter overrides for the adapter flags given (none: {})."""
    out: dict[str, object] = {}
    if args.adapter is not None:
        out["adapter"] = args.adapter
    options = _options_mapping(args.adapter_options)
    if options:
        out["adapter_options"] = json.dumps(options)
    if args.unnorm_key:
        out["unnorm_key"] = args.unnorm_key
    if args.trust_remote_code:
        out["trust_remote_code"] = True
    return out
