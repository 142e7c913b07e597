"""One description of each graph: the bringup YAML (`config/bringup_*.yaml`) read into plain node
descriptions, for `vla-ros up` (which starts them as processes) and for the launch files (which
turn them into `launch_ros` actions). Nothing here imports `launch`, so a test can check that
`ros2 launch` would start exactly the nodes, parameter files and overrides `vla-ros up` starts.

A bringup file:

    root: ..                                # optional; relative paths resolve against it
    nodes:
      - executable: safety_monitor_node     # a console script of this package
        params: [config/safety_monitor_nav.yaml] # relative to `root` (default: this file's folder)
        overrides: {report_dir: reports/safety}   # outputs: relative to the working directory
      - executable: policy_node
        params: [config/policy_nav.yaml]
        overrides:
          artifact: ../artifacts/my_vla      # an input path: relative to `root`, like params
          adapter: openvla                   # a preset or module:Class, checked here
          adapter_options: {action_map: {names: [linear_x, angular_z], order: [x, yaw]}}
      - executable: sim_node
        ends_graph: true                     # its clean exit ends the run (code 0)
      - script: scripts/my_driver.py         # a Python file run as a node (a robot's driver)
        name: driver
      - executable: safety_monitor_node
        name: arm_gate
        role: safety                         # default for safety_monitor_node; else `node`
    duration_s: 0                           # 0: until Ctrl-C

Relative paths in the file (parameter files, scripts, and the input paths of PATH_PARAMETERS:
the policy's `artifact`, the player's `bag`) resolve against the file's own folder, or against
`root` (itself relative to that folder) when given: a user's `my_robot/bringup.yaml` naming
`artifact: art` means `my_robot/art` wherever `vla-ros up` is started from. The shipped files
say `root: ..` (the package root). Outputs such as `report_dir` stay relative to the working
directory, as on a command line. `adapter_options` may be written as a mapping; the node
receives it as JSON text (its parameter is a string).

Replay graphs name the `bag_player_node` executable; a launch file plays the same bag with
`ros2 bag play`, and `bag_play_command` builds that command from the same `config/bag_player.yaml`,
so both play only the robot's inputs listed there (never the recorded commands and actions,
which would reach the live gate beside the live policy's).
"""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pruned_ros.topic_names import absolute

PACKAGE = "vla_pruned_ros"
ROLES = ("node", "safety")
SAFETY_EXECUTABLE = "safety_monitor_node"
BAG_PLAYER_EXECUTABLE = "bag_player_node"
# Every executable is its module's name, `vla_pruned_ros/ros/<executable>.py`. The old names of
# the renamed ones still work, once, with a deprecation line: `ros2 run` through the aliases in
# setup.py (ros/aliases.py), a bringup file through `load_bringup`.
RENAMED_EXECUTABLES = {"safety_monitor": SAFETY_EXECUTABLE, "bag_player": BAG_PLAYER_EXECUTABLE}
BAG_PLAYER_NODE = "vla_bag_player"
# Parameter files are `config/<executable without _node>_<task>.yaml` (policy_nav, sim_manip,
# safety_monitor_gazebo, bag_player). A bringup file naming an old file is told the new name.
RENAMED_CONFIGS = {
    "safety_monitor.yaml": "safety_monitor_nav.yaml",
    "safety_manip.yaml": "safety_monitor_manip.yaml",
    "safety_gazebo.yaml": "safety_monitor_gazebo.yaml",
}
# Executables that are lifecycle nodes: a launch file starts them as `LifecycleNode`s and drives
# configure -> activate, checking each transition's result.
LIFECYCLE_EXECUTABLES = frozenset({"policy_node"})
# The ROS node name each executable gives its node. `vla-ros up` renames none, so a launch file
# must give these same names (a parameter file's sections are keyed by them); a test checks them
# against the node classes.
# Parameters, per executable, that name an input file or folder (resolved like `params`);
# values in NOT_PATHS name no file ("embedded": the shipped model).
PATH_PARAMETERS: dict[str, tuple[str, ...]] = {
    "policy_node": ("artifact",),
    BAG_PLAYER_EXECUTABLE: ("bag",),
}
NOT_PATHS = frozenset({"", "embedded"})
NODE_NAMES = {
    "policy_node": "vla_policy",
    SAFETY_EXECUTABLE: "safety_monitor",
    "sim_node": "vla_sim",
    BAG_PLAYER_EXECUTABLE: BAG_PLAYER_NODE,
}


@dataclass
class NodeSpec:
    executable: str
    params: list[Path] = field(default_factory=list)
    overrides: dict[str, object] = field(default_factory=dict)
    name: str = ""
    ends_graph: bool = False  # its clean exit (code 0) is the graph's normal end
    role: str = "node"  # "safety": the gate, stopped last (see cli/ros_up.py)
    script: Path | None = None  # a Python file run instead of a console script

    @property
    def is_safety(self) -> bool:
        return self.role == "safety"

    @property
    def is_lifecycle(self) -> bool:
        return self.script is None and self.executable in LIFECYCLE_EXECUTABLES


class BringupError(ValueError):
    """A bringup file that cannot be started; the message says what to fix."""


def entry_modules() -> dict[str, str]:
    """Console script name -> module, from this package's installed entry points."""
    dist = importlib.metadata.distribution(PACKAGE)
    return {
        ep.name: ep.value.split(":")[0] for ep in dist.entry_points if ep.group == "console_scripts"
    }


def load_bringup(path: Path) -> tuple[list[NodeSpec], float]:
    """The nodes of a bringup file and its duration (0: until stopped); BringupError names what
    is wrong (an unknown executable, a missing parameter file, a bad role)."""
    path = Path(path)
    if not path.is_file():
        raise BringupError(f"bringup file {path} does not exist{_renamed(path)}")
    data = yaml.safe_load(path.read_text()) or {}
    base = (path.resolve().parent / str(data.get("root", "."))).resolve()
    if not base.is_dir():
        raise BringupError(f"{path}: root {data.get('root')!r} is not a folder ({base})")
    modules = entry_modules()
    specs = []
    for i, entry in enumerate(data.get("nodes") or []):
        exe, script = entry.get("executable"), entry.get("script")
        if exe in RENAMED_EXECUTABLES:
            new = RENAMED_EXECUTABLES[exe]
            print(
                f"{path}: node {i}: executable {exe!r} is deprecated, renamed {new!r} "
                "(starting that; rename it in the file)",
                file=sys.stderr,
            )
            exe = new
        if script is not None:
            script = Path(script) if Path(script).is_absolute() else base / script
            if exe is not None or not script.is_file():
                raise BringupError(
                    f"{path}: node {i}: script {script} does not exist or is given with an "
                    "executable (give one of them)"
                )
            exe = script.stem
        elif exe not in modules:
            raise BringupError(
                f"{path}: node {i}: unknown executable {exe!r}; known: {sorted(modules)}"
            )
        params = [
            (base / p) if not Path(p).is_absolute() else Path(p) for p in entry.get("params", [])
        ]
        for p in params:
            if not p.is_file():
                raise BringupError(
                    f"{path}: node {i} ({exe}): parameter file {p} does not exist{_renamed(p)}"
                )
        overrides = _node_overrides(path, i, exe, dict(entry.get("overrides") or {}), base)
        name, ends = entry.get("name", exe), bool(entry.get("ends_graph", False))
        role = entry.get("role", "safety" if exe == SAFETY_EXECUTABLE else "node")
        if role not in ROLES:
            raise BringupError(f"{path}: node {i} ({exe}): role {role!r} is not one of {ROLES}")
        specs.append(NodeSpec(exe, params, overrides, name, ends, role, script))
    if not specs:
        raise BringupError(f"{path}: no nodes listed under 'nodes'")
    return specs, float(data.get("duration_s", 0) or 0)


def _renamed(path: Path) -> str:
    """For a missing file that was renamed (RENAMED_CONFIGS): the sentence naming the new one."""
    new = RENAMED_CONFIGS.get(path.name)
    return f" (renamed {path.with_name(new)}: use that)" if new else ""


def _node_overrides(
    path: Path, i: int, exe: str, overrides: dict[str, object], base: Path
) -> dict[str, object]:
    """A node's overrides as the node takes them: input paths resolved against `base`,
    `adapter_options` as JSON text, the adapter's name checked (BringupError says why)."""
    import json

    from vla_pruned_ros.models.registry import adapter_problem

    for key in PATH_PARAMETERS.get(exe, ()):
        value = overrides.get(key)
        if isinstance(value, str) and value not in NOT_PATHS:
            p = Path(value).expanduser()
            overrides[key] = str(p if p.is_absolute() else base / p)
    if exe == "policy_node":
        problem = adapter_problem(str(overrides.get("adapter", "")))
        if problem:
            raise BringupError(f"{path}: node {i} ({exe}): {problem}")
        if isinstance(overrides.get("adapter_options"), dict):
            overrides["adapter_options"] = json.dumps(overrides["adapter_options"])
    return overrides


def apply_overrides(specs: list[NodeSpec], by_executable: dict[str, dict[str, object]]) -> None:
    """Add per-executable parameter overrides (a launch argument, a CLI flag) on top of the
    file's; they win over it, as a later `-p` wins on the command line."""
    for spec in specs:
        spec.overrides.update(by_executable.get(spec.executable, {}))


@dataclass(frozen=True)
class LaunchNode:
    """What a launch file needs to start one node: `launch_ros.actions.Node(**fields)`, or a
    `LifecycleNode` when `lifecycle` is set. Parameters are files then one override dict, in
    the order `vla-ros up` passes them (`--params-file ...` then `-p ...`)."""

    executable: str
    name: str  # the ROS node name (NODE_NAMES), the one `vla-ros up` runs it under
    parameters: tuple[str | dict[str, object], ...]
    lifecycle: bool
    ends_graph: bool
    package: str = PACKAGE


def launch_nodes(
    path: Path, by_executable: dict[str, dict[str, object]] | None = None
) -> list[LaunchNode]:
    """The launch-file form of a bringup file: one LaunchNode per node, the bag player left out
    (a launch file plays the bag with `ros2 bag play`, see `bag_play_command`). Script nodes
    cannot be launched by package and executable, so they are refused with a reason."""
    specs, _ = load_bringup(path)
    apply_overrides(specs, by_executable or {})
    nodes = []
    for spec in specs:
        if spec.script is not None:
            raise BringupError(
                f"{path}: node {spec.name} is a script ({spec.script}); a launch file starts "
                "installed executables only: make it a console script of a package"
            )
        if spec.executable == BAG_PLAYER_EXECUTABLE:
            continue
        if spec.executable not in NODE_NAMES:
            raise BringupError(f"{path}: {spec.executable} has no known node name (NODE_NAMES)")
        if spec.name not in (spec.executable, NODE_NAMES[spec.executable]):
            raise BringupError(
                f"{path}: node {spec.name!r}: `vla-ros up` does not rename nodes, so a launch "
                f"file cannot either; drop `name:` or use {NODE_NAMES[spec.executable]!r}"
            )
        overrides = dict(spec.overrides)
        if spec.is_lifecycle:
            overrides["autostart"] = False  # the launch file drives its transitions
        params: list[str | dict[str, object]] = [str(p) for p in spec.params]
        if overrides:
            params.append(overrides)
        nodes.append(
            LaunchNode(
                spec.executable,
                NODE_NAMES[spec.executable],
                tuple(params),
                spec.is_lifecycle,
                spec.ends_graph,
            )
        )
    return nodes


def typed_overrides(values: dict[str, str]) -> dict[str, object]:
    """Launch arguments are strings; as parameter overrides they take their YAML type (`3` an
    int, `true` a bool), as `-p key:=3` would. Empty means "as the bringup file says"."""
    return {key: yaml.safe_load(value) for key, value in values.items() if value != ""}


# The policy node's parameters a launch file takes as arguments (`ros2 launch ... adapter:=openvla
# trust_remote_code:=true`), the same ones `vla-ros` takes as flags (cli/adapter_args.py).
POLICY_LAUNCH_ARGUMENTS = ("artifact", "adapter", "adapter_options", "unnorm_key",
                           "trust_remote_code")  # fmt: skip


def policy_overrides(values: dict[str, str]) -> dict[str, object]:
    """Launch arguments for the policy node as its overrides: typed like `typed_overrides`,
    except `adapter_options`, which the node takes as YAML/JSON text; a bad adapter name is a
    BringupError naming the valid ones. Empty means "as the bringup file says"."""
    from vla_pruned_ros.models.registry import adapter_problem

    text = {k: v for k, v in values.items() if k == "adapter_options" and v != ""}
    out = {**typed_overrides({k: v for k, v in values.items() if k not in text}), **text}
    problem = adapter_problem(str(out.get("adapter", "")))
    if problem:
        raise BringupError(problem)
    return out


def bag_player_spec(path: Path) -> NodeSpec:
    """The bag player node of a replay bringup file; BringupError when it has none."""
    specs, _ = load_bringup(path)
    for spec in specs:
        if spec.executable == BAG_PLAYER_EXECUTABLE:
            return spec
    raise BringupError(f"{path}: no {BAG_PLAYER_EXECUTABLE} node: it is not a replay graph")


def bag_topics(spec: NodeSpec) -> list[str]:
    """The topics the bag player plays, absolute, from its parameter files and overrides (the
    last file that sets them wins, then an override). Empty means every recorded topic, which a
    replay graph must never do, so that is refused."""
    topics: list[str] = []
    for p in spec.params:
        data = yaml.safe_load(p.read_text()) or {}
        for key in ("/**", spec.name, f"/{spec.name}", BAG_PLAYER_NODE, f"/{BAG_PLAYER_NODE}"):
            section = (data.get(key) or {}).get("ros__parameters") or {}
            if "topics" in section:
                topics = list(section["topics"])
    topics = list(spec.overrides.get("topics", topics))
    topics = [absolute(t) for t in topics if t]
    if not topics:
        raise BringupError(
            f"{spec.name}: no 'topics' listed: a replay must play only the robot's inputs, "
            "never the recorded commands (list them in config/bag_player.yaml)"
        )
    return topics


def bag_play_command(path: Path, bag: str, rate: str) -> list[str]:
    """`ros2 bag play` with the same topics, clock and rate the replay graph's bag player uses.
    `bag` and `rate` are strings so a launch file can pass its substitutions' values."""
    spec = bag_player_spec(path)
    return ["ros2", "bag", "play", bag, "--clock", "--rate", rate, "--topics", *bag_topics(spec)]
