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
