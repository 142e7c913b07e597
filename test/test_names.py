"""One naming scheme (vla_pruned_ros/topic_names.py), checked against what the code really does:
every node names each topic parameter for the topic's role with the same default, the renamed
parameters' new names are declared and the old ones are not, and every parameter a bringup YAML
or a launch file hands a node is one that node declares (parsed from the files, compared with
real node instances), so a rename that misses a file fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from node_parameters import NODE_CLASSES, declared_parameters

from vla_pruned_ros import topic_names
from vla_pruned_ros.bringup import NODE_NAMES, POLICY_LAUNCH_ARGUMENTS
from vla_pruned_ros.ros.params import RENAMED

ROOT = Path(__file__).resolve().parents[1]
# Optional inputs default to "" (not subscribed) instead of the table's topic.
OPTIONAL_TOPICS = {("safety_monitor", "gz_contacts_topic")}  # (node name, parameter)


def _module(cls: type) -> str:
    """A node class's module name: the executable that starts it (setup.py's entry points)."""
    return cls.__module__.rsplit(".", 1)[1]


@pytest.fixture(scope="module")
def declared() -> dict[str, dict[str, object]]:
    """ROS node name -> {parameter: default}, from real node instances."""
    return declared_parameters()


def _by_executable(declared: dict, executable: str) -> dict[str, object]:
    """The parameters of the node an executable starts (through its ROS node name)."""
    return declared[NODE_NAMES[executable]]


def test_the_topic_table_gives_each_topic_one_parameter_name() -> None:
    topics = list(topic_names.TOPIC_PARAMETERS.values())
    assert len(set(topics)) == len(topics), "two parameter names for one topic"
    assert all(name.endswith("_topic") for name in topic_names.TOPIC_PARAMETERS)


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda c: c.__name__)
def test_every_topic_parameter_is_named_for_its_role(cls, declared) -> None:
    node_name = NODE_NAMES[_module(cls)]
    params = declared[node_name]
    for name, default in params.items():
        if not name.endswith("_topic"):
            continue
        assert name in topic_names.TOPIC_PARAMETERS, (
            f"{cls.__name__}: {name} is not in topic_names.TOPIC_PARAMETERS (the one scheme)"
        )
        if default == "" and (node_name, name) in OPTIONAL_TOPICS:
            continue
        assert default == topic_names.TOPIC_PARAMETERS[name], (
            f"{cls.__name__}: {name} defaults to {default!r}, the scheme says "
            f"{topic_names.TOPIC_PARAMETERS[name]!r}"
        )


def test_renamed_parameters_are_declared_under_their_new_names_only(declared) -> None:
    assert RENAMED, "no renames listed"
    for executable, renames in RENAMED.items():
        assert executable in {_module(c) for c in NODE_CLASSES}, executable
        params = _by_executable(declared, executable)
        for old, new in renames.items():
            assert new in params, f"{executable}: renamed {old} -> {new}, but {new} is undeclared"
            assert old not in params, f"{executable} still declares {old}"


def _bringup_files() -> list[Path]:
    return sorted((ROOT / "config").glob("bringup_*.yaml"))


@pytest.mark.parametrize("path", _bringup_files(), ids=lambda p: p.name)
def test_bringup_overrides_are_parameters_the_node_declares(path: Path, declared) -> None:
    data = yaml.safe_load(path.read_text())
    for entry in data["nodes"]:
        params = _by_executable(declared, entry["executable"])
        unknown = set(entry.get("overrides") or {}) - set(params)
        assert not unknown, f"{path.name}: {entry['executable']} does not declare {unknown}"
        for file in entry.get("params", []):
            sections = yaml.safe_load((path.parent / data.get("root", ".") / file).read_text())
            keys = set((sections[NODE_NAMES[entry["executable"]]] or {})["ros__parameters"])
            old = set(RENAMED.get(entry["executable"], {})) - set(params)
            assert not keys & old, f"{file} still uses the old names {keys & old}"


def _override_keys(expr: ast.expr, assigned: dict[str, ast.expr]) -> set[str]:
    """The parameter names an override expression of a launch file sets: dict keys, the keys
    of dicts passed to typed_overrides/policy_overrides, names bound earlier in the function,
    and `{k: ... for k in POLICY_LAUNCH_ARGUMENTS}`."""
    if isinstance(expr, ast.Name):
        if expr.id == "POLICY_LAUNCH_ARGUMENTS":
            return set(POLICY_LAUNCH_ARGUMENTS)
        return _override_keys(assigned[expr.id], assigned) if expr.id in assigned else set()
    if isinstance(expr, ast.Dict):
        keys: set[str] = set()
        for key, value in zip(expr.keys, expr.values, strict=True):
            if key is None:  # **spread
                keys |= _override_keys(value, assigned)
            elif isinstance(key, ast.Constant):
                keys.add(key.value)
        return keys
    if isinstance(expr, ast.DictComp):
        return set().union(*(_override_keys(g.iter, assigned) for g in expr.generators))
    if isinstance(expr, ast.Call):
        return set().union(set(), *(_override_keys(a, assigned) for a in expr.args))
    return set()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name
)
def test_launch_file_overrides_name_real_executables_and_their_parameters(
    path: Path, declared
) -> None:
    tree = ast.parse(path.read_text())
    assigned = {
        node.targets[0].id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    extra = assigned.get("extra")
    if extra is None:
        return  # gazebo.launch.py includes robot.launch.py and overrides nothing itself
    assert isinstance(extra, ast.Dict)
    for key, value in zip(extra.keys, extra.values, strict=True):
        executable = key.value
        assert executable in NODE_NAMES, f"{path.name}: overrides for unknown {executable!r}"
        names = _override_keys(value, assigned)
        unknown = names - set(_by_executable(declared, executable))
        assert names and not unknown, f"{path.name}: {executable} does not declare {unknown}"


def test_each_executable_is_its_modules_name() -> None:
    from vla_pruned_ros.bringup import RENAMED_EXECUTABLES, entry_modules

    modules = entry_modules()
    for executable in NODE_NAMES:
        assert modules[executable] == f"vla_pruned_ros.ros.{executable}", executable
    for old, new in RENAMED_EXECUTABLES.items():
        assert modules[old] == "vla_pruned_ros.ros.aliases" and new in NODE_NAMES, old


def test_an_old_executable_name_runs_the_new_one_with_a_deprecation_line(tmp_path: Path) -> None:
    """The installed alias (setup.py's entry point, loaded as `ros2 run` would) prints one line
    naming the new executable and runs it: here the bag player, refusing an empty `bag`."""
    import subprocess
    import sys

    code = (
        "import sys; from importlib.metadata import entry_points; "
        "sys.exit(entry_points(group='console_scripts')['bag_player'].load()())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "bag_player: deprecated executable name, renamed bag_player_node" in proc.stderr
    assert "parameter 'bag' is empty" in proc.stderr  # the real node ran


def test_a_bringup_file_with_an_old_executable_name_starts_the_new_one(tmp_path: Path, capsys):
    from vla_pruned_ros.bringup import load_bringup

    path = tmp_path / "bringup.yaml"
    path.write_text("nodes:\n  - executable: safety_monitor\n")
    (spec,) = load_bringup(path)[0]
    assert spec.executable == "safety_monitor_node" and spec.is_safety
    err = capsys.readouterr().err
    assert "executable 'safety_monitor' is deprecated, renamed 'safety_monitor_node'" in err


def test_each_parameter_file_is_named_for_its_node_and_task() -> None:
    """`config/<executable without _node>[_<task>].yaml`: the file a node reads says whose it is."""
    node_executables = {name: exe for exe, name in NODE_NAMES.items()}
    checked = 0
    for path in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            continue
        for section in data:
            if section not in node_executables:
                continue  # a tool's file (sweep, divergence) or the Gazebo bridge's
            prefix = node_executables[section].removesuffix("_node")
            assert path.stem == prefix or path.stem.startswith(f"{prefix}_"), (
                f"{path.name} holds {section}'s parameters: name it {prefix}_<task>.yaml"
            )
            checked += 1
    assert checked >= 8


def test_a_bringup_file_naming_a_renamed_parameter_file_is_told_the_new_name(tmp_path: Path):
    from vla_pruned_ros.bringup import RENAMED_CONFIGS, BringupError, load_bringup

    for old, new in RENAMED_CONFIGS.items():
        assert (ROOT / "config" / new).is_file() and not (ROOT / "config" / old).exists()
    path = tmp_path / "bringup.yaml"
    path.write_text(
        f"root: {ROOT}\nnodes:\n  - executable: safety_monitor_node\n"
        "    params: [config/safety_monitor.yaml]\n"
    )
    with pytest.raises(BringupError, match=r"renamed .*config/safety_monitor_nav\.yaml"):
        load_bringup(path)
