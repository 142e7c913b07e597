"""Launch files cannot run here (no launch package on PyPI), so check what can be checked: each
compiles, names executables that setup.py installs, parameter files that exist, and node names
whose YAML parameters the nodes really declare."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import rclpy
import yaml

from vla_pruned_ros.evaluation.divergence_sweep import DivergenceConfig
from vla_pruned_ros.evaluation.sweep import SweepConfig
from vla_pruned_ros.ros.bag_player_node import BagPlayerParameters
from vla_pruned_ros.ros.policy_node import PolicyNode
from vla_pruned_ros.ros.safety_monitor_node import SafetyMonitorNode
from vla_pruned_ros.ros.sim_node import SimNode

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
NODE_CLASSES = [PolicyNode, SafetyMonitorNode, SimNode, BagPlayerParameters]
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
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        result = {}
        for cls in NODE_CLASSES:
            node = cls(context=context)
            result[node.get_name()] = set(node._parameters) - {"use_sim_time"}
            if hasattr(node, "task"):
                node.task.close()
            node.destroy_node()
        return result
    finally:
        rclpy.shutdown(context=context)


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
                assert (ROOT / "config" / value).is_file(), value
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
    source = "bag_player" if path.name.startswith("bringup_replay") else "sim_node"
    assert {s.executable for s in specs} == {"safety_monitor", "policy_node", source}
    assert [s.name for s in specs if s.ends_graph] == [source]
