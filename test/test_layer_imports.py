"""The layers hold: compression core (torch only) < models < ROS nodes and tools. `compression/`
imports no models, ROS or evaluation code; `monitor/`, `evaluation/`, `training/` and the bag
reader/writer import nothing from `ros/` and no rclpy, so offline evaluation, calibration and
bag reading run without a ROS installation; and none of them imports the `cli/` layer, which
sits on top (what a tool and a library both need lives below it). (`bags/play.py`,
`record.py` and `qos.py` are the ROS tools that publish and subscribe; they may use rclpy.)

Checked twice: a real import of every module of a layer in a fresh interpreter, then
`sys.modules` (catches what a module pulls in through others), and an AST scan of every import
statement, including those inside functions (which the import alone does not run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vla_pruned_ros"
ROS = ("rclpy", "vla_pruned_ros.ros", "rosidl_runtime_py", "vla_pruned_ros_msgs")
CLI = ("vla_pruned_ros.cli",)  # the command-line layer sits on top: nothing below imports it
BAG_ROS_TOOLS = {"play", "record", "qos"}
LAYERS = {
    "compression": ROS + CLI + ("vla_pruned_ros.models", "vla_pruned_ros.evaluation"),
    "monitor": ROS + CLI,
    "evaluation": ROS + CLI,
    "training": ROS + CLI,
    "bags": ROS + CLI,
}


def _modules(layer: str) -> list[str]:
    folder = PACKAGE / layer
    names = [f"vla_pruned_ros.{layer}"]
    for path in sorted(folder.glob("*.py")):
        if path.stem == "__init__" or (layer == "bags" and path.stem in BAG_ROS_TOOLS):
            continue
        names.append(f"vla_pruned_ros.{layer}.{path.stem}")
    return names


def _forbidden(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_importing_a_layer_loads_no_forbidden_module(layer: str) -> None:
    code = "import importlib, sys\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in _modules(layer)
    ) + "print('\\n'.join(sys.modules))"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {m for m in done.stdout.split() if _forbidden(m, LAYERS[layer])}
    assert not loaded, f"importing {layer}/ loads {sorted(loaded)}"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_import_statement_in_a_layer_reaches_a_forbidden_module(layer: str) -> None:
    bad = []
    for module in _modules(layer)[1:] + [f"vla_pruned_ros.{layer}.__init__"]:
        path = PACKAGE / layer / f"{module.rsplit('.', 1)[1]}.py"
        bad += [f"{path.relative_to(ROOT)}:{line} imports {name}"
                for line, name in _imports(path) if _forbidden(name, LAYERS[layer])]  # fmt: skip
    assert not bad, "\n".join(bad)


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from vla_pruned_ros.ros import image_io\n    import rclpy\n")
    names = [n for _, n in _imports(sample)]
    assert _forbidden(names[0], ROS) and "rclpy" in names
