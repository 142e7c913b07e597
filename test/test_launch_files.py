"""Launch files cannot run here (no launch package on PyPI), so check what can be checked: each
compiles, names executables that setup.py installs, parameter files that exist, and node names
whose YAML parameters the nodes really declare."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from node_parameters import declared_parameters

from vla_pruned_ros.evaluation.divergence_sweep import DivergenceConfig
from vla_pruned_ros.evaluation.sweep import SweepConfig

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
# Parameter files of the command-line tools (same layout, read by read_ros_params).
CLI_CONFIGS = {"vla_eval_sweep": SweepConfig, "vla_eval_divergence": DivergenceConfig}
# Packages a launch file may use beyond ours: Gazebo integration, optional on a robot (README).
EXTERNAL_NODES = {("ros_gz_bridge", "parameter_bridge")}


def _flatten(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    """Node name -> the parameters it declares, from real node instances."""
    return {name: set(params) - {"use_sim_time"} for name, params in declared_parameters().items()}


def _console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            scripts.add(node.value.split(" = ")[0].strip())
    return scripts


def _node_calls(path: Path) -> list[dict[str, object]]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            calls.append(
                {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            )
    return calls


def test_there_are_launch_files() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {
        "robot.launch.py",
        "replay.launch.py",
        "sim.launch.py",
        "gazebo.launch.py",
    }


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_compiles_and_defines_a_description(path: Path) -> None:
    code = compile(path.read_text(), str(path), "exec")
    assert "generate_launch_description" in code.co_names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_only_what_exists(path: Path, declared) -> None:
    scripts = _console_scripts()
    for call in _node_calls(path):
        if (call["package"], call["executable"]) in EXTERNAL_NODES:
            continue
        assert call["package"] == "vla_pruned_ros", call
        assert call["executable"] in scripts, call
        assert call["name"] in declared, f"no node is named {call['name']}"
    text = path.read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if value.endswith(".yaml") and not value.startswith("."):  # not a suffix piece
                assert (ROOT / "config" / value.removeprefix("config/")).is_file(), value
            if value.endswith(".launch.py") and value != "gz_sim.launch.py":  # ros_gz_sim's
                assert (ROOT / "launch" / value).is_file(), value
            if value.endswith(".sdf"):
                assert (ROOT / "worlds" / value).is_file(), value


def _parameter_files() -> list[Path]:
    return [p for p in CONFIGS if "ros__parameters" in p.read_text()]


@pytest.mark.parametrize("path", _parameter_files(), ids=lambda p: p.name)
def test_parameter_file_keys_are_declared_by_its_node(path: Path, declared) -> None:
    data = yaml.safe_load(path.read_text())
    for node_name, section in data.items():
        if node_name in CLI_CONFIGS:  # an unknown key is an error there too
            CLI_CONFIGS[node_name].from_file(path)
            continue
        assert node_name in declared, f"{path.name}: no node named {node_name}"
        keys = _flatten(section["ros__parameters"])
        unknown = keys - declared[node_name]
        assert not unknown, f"{path.name}: {node_name} does not declare {sorted(unknown)}"


def test_gazebo_bridge_config_is_well_formed() -> None:
    entries = yaml.safe_load((ROOT / "config" / "gz_bridge.yaml").read_text())
    keys = {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}
    for entry in entries:
        assert set(entry) == keys, entry
        assert entry["direction"] in {"GZ_TO_ROS", "ROS_TO_GZ", "BIDIRECTIONAL"}
    topics = {e["ros_topic_name"] for e in entries}
    assert {"/clock", "camera/image_raw", "cmd_vel", "gz_contacts"} <= topics


def test_gazebo_world_has_the_sensors_the_bridge_expects() -> None:
    from xml.etree import ElementTree

    world = ElementTree.parse(ROOT / "worlds" / "nav_arena.sdf").getroot()
    sensor_topics = {s.findtext("topic") for s in world.iter("sensor")}
    assert {"camera/image_raw", "contacts", "scan"} <= sensor_topics
    bridged = {
        e["gz_topic_name"] for e in yaml.safe_load((ROOT / "config/gz_bridge.yaml").read_text())
    }
    assert sensor_topics <= bridged


@pytest.mark.parametrize(
    "path", sorted((ROOT / "config").glob("bringup_*.yaml")), ids=lambda p: p.name
)
def test_bringup_files_name_installed_executables_and_existing_parameter_files(path: Path) -> None:
    from vla_pruned_ros.cli.ros_up import load_bringup

    specs, _ = load_bringup(path)  # raises on unknown executables or missing files
    source = {
        "bringup_replay": "bag_player_node",
        "bringup_robot": None,
        "bringup_gazebo": None,
    }.get(path.stem.rsplit("_", 1)[0] if "replay" in path.stem else path.stem, "sim_node")
    assert {s.executable for s in specs} == {"safety_monitor_node", "policy_node"} | (
        {source} if source else set()
    )
    assert [s.name for s in specs if s.ends_graph] == ([source] if source else [])


# -- one description of each graph: what `ros2 launch` starts is what `vla-ros up` starts ------

BRINGUPS = sorted((ROOT / "config").glob("bringup_*.yaml"))
# Which bringup files each launch file reads (by the names it passes to package_file).
LAUNCH_GRAPHS = {
    "sim.launch.py": ["bringup_nav.yaml", "bringup_manip.yaml"],
    "replay.launch.py": ["bringup_replay_nav.yaml", "bringup_replay_manip.yaml"],
    "robot.launch.py": ["bringup_robot.yaml"],
    "gazebo.launch.py": ["bringup_gazebo.yaml"],
}


def _as_ros_args(desc) -> list[str]:
    """A launch node's parameters as the command line `vla-ros up` builds for the same node."""
    import yaml as _yaml

    args = ["--ros-args"]
    for item in desc.parameters:
        if isinstance(item, str):
            args += ["--params-file", item]
        else:
            for key, value in item.items():
                text = _yaml.safe_dump(value, default_flow_style=True)
                args += ["-p", f"{key}:={text.strip().removesuffix('...').strip()}"]
    return args


@pytest.mark.parametrize("path", BRINGUPS, ids=lambda p: p.name)
def test_launch_nodes_start_what_vla_ros_up_starts(path: Path) -> None:
    from vla_pruned_ros.bringup import launch_nodes
    from vla_pruned_ros.cli.ros_up import command_for, entry_modules, load_bringup

    specs, _ = load_bringup(path)
    modules = entry_modules()
    launched = {d.executable: d for d in launch_nodes(path)}
    for spec in specs:
        if spec.executable == "bag_player_node":  # `ros2 bag play` there, see the replay test
            assert spec.executable not in launched
            continue
        desc = launched.pop(spec.executable)
        assert (desc.package, desc.executable) == ("vla_pruned_ros", spec.executable)
        up = command_for(spec, modules)
        up = up[up.index("--ros-args") :]
        expected = up + (["-p", "autostart:=false"] if spec.executable == "policy_node" else [])
        assert _as_ros_args(desc) == expected
        assert desc.lifecycle == (spec.executable == "policy_node")
        assert desc.ends_graph == spec.ends_graph
    assert not launched, f"launched but not in {path.name}: {sorted(launched)}"


def test_launch_node_names_are_the_nodes_own(declared) -> None:
    """The names a launch file gives are those the nodes run under in `vla-ros up` (their
    classes' names), so the parameter files' sections apply in both."""
    from vla_pruned_ros.bringup import NODE_NAMES

    assert set(NODE_NAMES.values()) <= set(declared)
    for path in BRINGUPS:
        data = yaml.safe_load(path.read_text())
        for entry in data["nodes"]:
            name = NODE_NAMES[entry["executable"]]
            for params in entry.get("params", []):
                sections = yaml.safe_load((ROOT / params).read_text())
                assert name in sections, f"{params} has no section for {name}"


def test_launch_arguments_override_the_bringup_file_like_a_later_p() -> None:
    from vla_pruned_ros.bringup import launch_nodes, typed_overrides

    extra = {"sim_node": typed_overrides({"episodes": "10"}), "policy_node": {"artifact": "A"}}
    nodes = {d.executable: d for d in launch_nodes(ROOT / "config/bringup_nav.yaml", extra)}
    assert nodes["sim_node"].parameters[-1]["episodes"] == 10  # typed, over the file's 3
    assert nodes["policy_node"].parameters[-1]["artifact"] == "A"
    assert typed_overrides({"episodes": ""}) == {}  # empty: as the file says


@pytest.mark.parametrize("name", sorted(LAUNCH_GRAPHS), ids=str)
def test_launch_file_is_a_thin_shell_over_its_bringup_file(name: str) -> None:
    tree = ast.parse((ROOT / "launch" / name).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vla_pruned_ros")
        for alias in node.names
    }
    if name == "gazebo.launch.py":  # includes robot.launch.py with its own bringup file
        assert "robot.launch.py" in (ROOT / "launch" / name).read_text()
    else:
        assert {"launch_nodes", "node_actions"} <= imported, imported
    ours = [c for c in _node_calls(ROOT / "launch" / name) if c.get("package") == "vla_pruned_ros"]
    assert not ours, f"{name} describes nodes itself instead of reading the bringup file: {ours}"
    text = (ROOT / "launch" / name).read_text()
    for bringup in LAUNCH_GRAPHS[name]:
        stem = bringup.removesuffix(".yaml")
        named = bringup in text or f"{stem.rsplit('_', 1)[0]}_{{" in text
        assert named, f"{name} does not read {bringup}"
        assert (ROOT / "config" / bringup).is_file()


def test_replay_plays_only_the_robots_inputs_from_bag_player_yaml() -> None:
    from vla_pruned_ros.bringup import bag_play_command
    from vla_pruned_ros.ros import topics

    listed = yaml.safe_load((ROOT / "config/bag_player.yaml").read_text())["vla_bag_player"][
        "ros__parameters"
    ]["topics"]
    for task in ("nav", "manip"):
        cmd = bag_play_command(ROOT / f"config/bringup_replay_{task}.yaml", "BAG", "0.5")
        assert cmd[:7] == ["ros2", "bag", "play", "BAG", "--clock", "--rate", "0.5"]
        played = cmd[cmd.index("--topics") + 1 :]
        assert played == [f"/{t}" for t in listed]
        for recorded_output in (topics.CMD_RAW, topics.CMD, topics.ACTION):
            assert f"/{recorded_output}" not in played


def test_replay_without_a_topic_list_is_refused(tmp_path: Path) -> None:
    from vla_pruned_ros.bringup import BringupError, bag_play_command

    (tmp_path / "config").mkdir()
    player = tmp_path / "config/player.yaml"
    player.write_text("vla_bag_player:\n  ros__parameters:\n    topics: ['']\n")
    bringup = tmp_path / "config/bringup.yaml"
    bringup.write_text("nodes:\n  - executable: bag_player_node\n    params: [player.yaml]\n")
    with pytest.raises(BringupError, match="only the robot's inputs"):
        bag_play_command(bringup, "BAG", "1.0")


def test_launch_graph_checks_each_lifecycle_transition() -> None:
    """launch_graph.py cannot run here (no `launch`); check that it emits configure, activates
    only on configure's success, and shuts the launch down on either transition failing."""
    text = (ROOT / "vla_pruned_ros/launch_graph.py").read_text()
    compile(text, "launch_graph.py", "exec")
    for piece in (
        "TRANSITION_CONFIGURE",
        '_on(node, "configuring", "inactive", [_change(node, Transition.TRANSITION_ACTIVATE)])',
        '_on(node, "configuring", "unconfigured", failed("configure"))',
        '_on(node, "activating", "inactive", failed("activate"))',
        "LifecycleNode(",
        "Shutdown(reason=",
    ):
        assert piece in text, piece


# -- the adapter arguments reach the policy node from every launch file ----------------------


def _imported_from_bringup(tree: ast.Module) -> dict[str, object]:
    """Names a launch file imports from vla_pruned_ros.bringup, with their real values."""
    import vla_pruned_ros.bringup as bringup

    return {alias.asname or alias.name: getattr(bringup, alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "vla_pruned_ros.bringup"
            for alias in node.names}  # fmt: skip


def _call_name(node: ast.AST) -> str:
    return getattr(getattr(node, "func", None), "id", "") if isinstance(node, ast.Call) else ""


def _loop_names(comp: ast.AST, target: str, env: dict[str, object]) -> list[str]:
    """What `target` takes in a comprehension iterating over a name from bringup (else [])."""
    for gen in getattr(comp, "generators", []):
        if getattr(gen.target, "id", None) == target and isinstance(gen.iter, ast.Name):
            return [str(v) for v in env.get(gen.iter.id, ())]
    return []


def _declared_arguments(tree: ast.Module) -> set[str]:
    """DeclareLaunchArgument names: string constants and comprehensions over bringup's lists."""
    env, names = _imported_from_bringup(tree), set()
    for node in ast.walk(tree):
        if _call_name(node) == "DeclareLaunchArgument" and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
        elif isinstance(node, ast.GeneratorExp | ast.ListComp) and (
            _call_name(node.elt) == "DeclareLaunchArgument"
            and isinstance(node.elt.args[0], ast.Name)
        ):
            names |= set(_loop_names(node, node.elt.args[0].id, env))
    return names


def _passed_through(tree: ast.Module, included: str) -> dict[str, str]:
    """launch argument of the included file -> the LaunchConfiguration it is given, for the
    IncludeLaunchDescription whose source names `included`."""
    env = _imported_from_bringup(tree)
    holders = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)
               and any(isinstance(c, ast.Constant) and c.value == included
                       for c in ast.walk(node.value))}  # fmt: skip
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if _call_name(node) != "IncludeLaunchDescription":
            continue
        if not {n.id for n in ast.walk(node.args[0]) if isinstance(n, ast.Name)} & holders:
            continue
        given = next(k.value for k in node.keywords if k.arg == "launch_arguments")
        mapping = given.func.value if isinstance(given, ast.Call) else given  # {...}.items()
        for key, value in zip(mapping.keys, mapping.values, strict=True):
            if key is None and isinstance(value, ast.DictComp):  # **{k: LaunchConfiguration(k)}
                if _call_name(value.value) == "LaunchConfiguration" and isinstance(
                    value.key, ast.Name
                ) and ast.dump(value.value.args[0]) == ast.dump(value.key):  # fmt: skip
                    out |= {k: k for k in _loop_names(value, value.key.id, env)}
            elif isinstance(key, ast.Constant) and _call_name(value) == "LaunchConfiguration":
                arg = value.args[0]
                if isinstance(arg, ast.Constant):
                    out[key.value] = arg.value
    return out


@pytest.mark.parametrize("name", sorted(LAUNCH_GRAPHS), ids=str)
def test_every_launch_file_declares_the_policy_adapter_arguments(name: str) -> None:
    from vla_pruned_ros.bringup import POLICY_LAUNCH_ARGUMENTS

    declared = _declared_arguments(ast.parse((ROOT / "launch" / name).read_text()))
    missing = set(POLICY_LAUNCH_ARGUMENTS) - declared
    assert not missing, f"{name} does not declare {sorted(missing)}"


def test_gazebo_passes_the_adapter_arguments_through_to_robot_launch() -> None:
    """gazebo.launch.py runs the policy through robot.launch.py: each of robot.launch.py's
    adapter arguments must be given the gazebo launch argument of the same name, or
    `ros2 launch ... gazebo.launch.py adapter:=openvla` would start the embedded adapter."""
    from vla_pruned_ros.bringup import POLICY_LAUNCH_ARGUMENTS

    tree = ast.parse((ROOT / "launch/gazebo.launch.py").read_text())
    given = _passed_through(tree, "robot.launch.py")
    robot = _declared_arguments(ast.parse((ROOT / "launch/robot.launch.py").read_text()))
    assert set(POLICY_LAUNCH_ARGUMENTS) <= robot
    for arg in POLICY_LAUNCH_ARGUMENTS:
        assert given.get(arg) == arg, f"gazebo.launch.py gives robot.launch.py {arg}={given}"
    assert set(given) <= robot, f"robot.launch.py declares none of {sorted(set(given) - robot)}"
