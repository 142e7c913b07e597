"""package.xml, setup.py and the installed package agree, and everything setup.py names exists."""

from __future__ import annotations

import importlib
import importlib.metadata
from distutils.core import run_setup
from pathlib import Path
from xml.etree import ElementTree

import pytest
import setuptools  # noqa: F401  (provides distutils)

import vla_pruned_ros

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ElementTree.parse(ROOT / "package.xml").getroot()


@pytest.fixture(scope="module")
def dist():
    return run_setup(str(ROOT / "setup.py"), stop_after="init")


def test_package_xml_is_format_3_ament_python() -> None:
    assert MANIFEST.get("format") == "3"
    assert MANIFEST.findtext("export/build_type") == "ament_python"
    assert MANIFEST.find("maintainer").get("email")


def test_name_and_version_agree_everywhere(dist) -> None:
    name, version = MANIFEST.findtext("name"), MANIFEST.findtext("version")
    assert dist.get_name() == name == "vla_pruned_ros"
    assert dist.get_version() == version
    assert vla_pruned_ros.__version__ == version
    assert importlib.metadata.version(name) == version
    assert (ROOT / "resource" / name).is_file()


def test_every_entry_point_resolves_to_a_callable(dist) -> None:
    for line in dist.entry_points["console_scripts"]:
        _, target = (part.strip() for part in line.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), line


def test_entry_points_match_the_installed_distribution(dist) -> None:
    declared = {line.split("=")[0].strip() for line in dist.entry_points["console_scripts"]}
    installed = {
        ep.name
        for ep in importlib.metadata.distribution("vla_pruned_ros").entry_points
        if ep.group == "console_scripts"
    }
    assert declared == installed, "re-run scripts/setup.sh after changing setup.py"


def test_data_files_install_every_launch_and_config_file(dist) -> None:
    installed = {dest: set(files) for dest, files in dist.data_files}
    for files in installed.values():
        for f in files:
            assert (ROOT / f).is_file(), f
    assert "package.xml" in installed["share/vla_pruned_ros"]
    assert "resource/vla_pruned_ros" in installed["share/ament_index/resource_index/packages"]
    shipped = {"launch": ["*.launch.py"], "config": ["*.yaml", "*.xml"], "worlds": ["*.sdf"]}
    for folder, patterns in shipped.items():
        on_disk = {str(p.relative_to(ROOT)) for pat in patterns for p in (ROOT / folder).glob(pat)}
        assert on_disk == installed[f"share/vla_pruned_ros/{folder}"]


def test_interfaces_package_generates_every_msg_file() -> None:
    cmake = (ROOT / "interfaces/vla_pruned_ros_msgs/CMakeLists.txt").read_text()
    for msg in (ROOT / "msg").glob("*.msg"):
        assert f":msg/{msg.name}" in cmake, f"{msg.name} is not generated"


# Imports that are not ROS packages of a `ros-*` wheel here, by the package.xml key they need.
ROS_WITHOUT_WHEELS = {
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "cv_bridge": "cv_bridge",  # PyPI's is the ROS 1 port; the real one comes with ROS
    "vla_pruned_ros_msgs": "vla_pruned_ros_msgs",
    "ros_gz_interfaces": "ros_gz_interfaces",
    "tf2_msgs": "tf2_msgs",  # no wheel: scripts/setup.sh builds TFMessage (interfaces/tf2_msgs)
}
PYTHON_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "cv2": "python3-opencv",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
}
# Commands the launch files run, by the package that provides them.
COMMANDS = {("ros2", "bag"): "ros2bag", ("ros2", "topic"): "ros2topic"}


def _imports() -> set[str]:
    import ast

    names = set()
    for path in [*(ROOT / "vla_pruned_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_package_xml_lists_every_run_dependency() -> None:
    """Every imported ROS package (a module a `ros-*` wheel provides, or one only a ROS install
    has), every Python library with a rosdep key, and every `ros2` verb a launch file runs."""
    listed = {e.text for e in MANIFEST.findall("exec_depend")}
    dists = importlib.metadata.packages_distributions()
    needed = set()
    for name in _imports():
        if name in ROS_WITHOUT_WHEELS:
            needed.add(ROS_WITHOUT_WHEELS[name])
        elif name in PYTHON_KEYS:
            needed.add(PYTHON_KEYS[name])
        elif any(d.lower().startswith("ros-") for d in dists.get(name, [])):
            needed.add(name)
    launch_text = "".join(p.read_text() for p in (ROOT / "launch").glob("*.py"))
    launch_text += (ROOT / "vla_pruned_ros/bringup.py").read_text()
    for (cmd, verb), package in COMMANDS.items():
        if f'"{cmd}",\n' in launch_text or f'"{cmd}", "{verb}"' in launch_text:
            needed.add(package)
    assert {"rclpy", "sensor_msgs", "diagnostic_msgs", "lifecycle_msgs", "launch_ros"} <= needed
    assert "ros2bag" in needed, "replay runs `ros2 bag play`"
    missing = needed - listed
    assert not missing, f"package.xml lacks exec_depend on {sorted(missing)}"


def test_install_puts_tools_on_path_and_ros_executables_in_lib(tmp_path: Path) -> None:
    """What colcon's ament_python build runs (`setup.py install --prefix P
    --single-version-externally-managed`), on a copy of the sources: every console script in
    P/lib/vla_pruned_ros for `ros2 run`, and the `vla-*` tools also in P/bin, where PATH is."""
    import shutil
    import subprocess
    import sys

    src, prefix = tmp_path / "src", tmp_path / "install"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("resource", "launch", "config", "worlds", "vla_pruned_ros"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "install", "--prefix", str(prefix),
         "--single-version-externally-managed", "--record", str(tmp_path / "record.txt")],
        cwd=src, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scripts = {line.split("=")[0].strip() for line in run_setup(
        str(ROOT / "setup.py"), stop_after="init").entry_points["console_scripts"]}  # fmt: skip
    tools = {s for s in scripts if s.startswith("vla-")}
    assert tools >= {"vla-ros", "vla-prune", "vla-eval", "vla-bag", "vla-inspect"}
    assert {p.name for p in (prefix / "lib" / "vla_pruned_ros").iterdir()} == scripts
    assert {p.name for p in (prefix / "bin").iterdir()} == tools
    recorded = (tmp_path / "record.txt").read_text()
    assert all(str(prefix / "bin" / t) in recorded for t in tools), "uninstall would miss them"
    site = next(prefix.glob("lib/python3*/site-packages"))
    run = subprocess.run(
        [str(prefix / "bin" / "vla-ros"), "--help"], capture_output=True, text=True, timeout=120,
        env={"PATH": str(prefix / "bin"), "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert run.returncode == 0 and "usage: vla-ros" in run.stdout, run.stderr[-2000:]
