"""ament_python build of vla_pruned_ros.

package.xml is the one place for the package's name, version and description; this file reads
them from it so that `colcon build` and `pip install` can never disagree.
"""

from pathlib import Path
from xml.etree import ElementTree

from setuptools import find_packages, setup
from setuptools.command.install_scripts import install_scripts

HERE = Path(__file__).resolve().parent
MANIFEST = ElementTree.parse(HERE / "package.xml").getroot()
PACKAGE_NAME = MANIFEST.findtext("name")
MAINTAINER = MANIFEST.find("maintainer")

# Console entry points: the `vla-*` tools and the ROS executables (`ros2 run vla_pruned_ros X`).
ENTRY_POINTS = {
    "console_scripts": [
        "vla-ros = vla_pruned_ros.cli.ros_up:main",
        "vla-bag = vla_pruned_ros.cli.bag:main",
        "vla-train = vla_pruned_ros.cli.train:main",
        "vla-eval = vla_pruned_ros.cli.eval:main",
        "vla-prune = vla_pruned_ros.cli.prune:main",
        "vla-inspect = vla_pruned_ros.cli.inspect_artifact:main",
        # each ROS executable is its module's name (vla_pruned_ros/ros/<executable>.py)
        "policy_node = vla_pruned_ros.ros.policy_node:main",
        "safety_monitor_node = vla_pruned_ros.ros.safety_monitor_node:main",
        "sim_node = vla_pruned_ros.ros.sim_node:main",
        "bag_player_node = vla_pruned_ros.ros.bag_player_node:main",
        # old names, deprecated: print a line naming the new one and run it (bringup.py)
        "safety_monitor = vla_pruned_ros.ros.aliases:safety_monitor",
        "bag_player = vla_pruned_ros.ros.aliases:bag_player",
    ],
}


TOOL_PREFIX = "vla-"  # the user-facing tools; the ROS executables stay in lib/<pkg> only


class InstallScriptsAndTools(install_scripts):
    """ament_python installs console scripts to lib/<pkg> (setup.cfg), where `ros2 run` finds
    them but PATH does not. The `vla-*` tools are meant to be typed, so they are also installed
    to <prefix>/bin, which a sourced colcon workspace (or a venv) puts on PATH."""

    def run(self) -> None:
        super().run()
        bindir = Path(self.get_finalized_command("install").install_base) / "bin"
        for script in list(self.get_outputs()):
            source = Path(script)
            if source.name.startswith(TOOL_PREFIX) and source.parent != bindir:
                self.mkpath(str(bindir))
                target = bindir / source.name
                self.copy_file(str(source), str(target))
                self.outfiles.append(str(target))


def _files(folder: str, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(HERE)) for p in (HERE / folder).glob(pattern) if p.is_file())


DATA_FILES = [
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
    (f"share/{PACKAGE_NAME}", ["package.xml"]),
    (f"share/{PACKAGE_NAME}/launch", _files("launch", "*.launch.py")),
    (f"share/{PACKAGE_NAME}/config", _files("config", "*.yaml") + _files("config", "*.xml")),
    (f"share/{PACKAGE_NAME}/worlds", _files("worlds", "*.sdf")),
]

setup(
    name=PACKAGE_NAME,
    version=MANIFEST.findtext("version"),
    description=MANIFEST.findtext("description"),
    maintainer=MAINTAINER.text,
    maintainer_email=MAINTAINER.get("email"),
    license=MANIFEST.findtext("license"),
    packages=find_packages(include=[PACKAGE_NAME, f"{PACKAGE_NAME}.*"]),
    # The embedded VLA's trained weights and model card ship inside the Python package.
    package_data={PACKAGE_NAME: ["models/weights/*/*"]},
    data_files=DATA_FILES,
    install_requires=["setuptools"],
    zip_safe=True,
    entry_points=ENTRY_POINTS,
    cmdclass={"install_scripts": InstallScriptsAndTools},
)
