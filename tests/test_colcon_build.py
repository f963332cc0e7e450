"""`colcon build` of the package in a scratch workspace installs a ROS-style executable
(lib/adu_perception/classifier_node), the launch file and the config, and the installed
node starts far enough to refuse a missing bundle with one clear line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ros_conftest_helpers import REPO

VENV_BIN = Path(sys.executable).parent
COLCON = VENV_BIN / "colcon"
NOT_SOURCES = (".venv", ".git", "build", "install", "log", "__pycache__", ".pytest_cache",
               "*.egg-info", "runs", "bundles")

pytestmark = pytest.mark.skipif(not COLCON.exists(), reason=f"colcon is not installed in {VENV_BIN}")


def test_colcon_build_installs_a_runnable_node(tmp_path):
    shutil.copytree(REPO, tmp_path / "src" / "adu_perception",
                    ignore=shutil.ignore_patterns(*NOT_SOURCES))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    build = subprocess.run([str(COLCON), "build", "--base-paths", str(tmp_path / "src")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / "install" / "adu_perception"
    executable = prefix / "lib" / "adu_perception" / "classifier_node"
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = prefix / "share" / "adu_perception"
    for installed in ("package.xml", "launch/classifier.launch.py", "config/classifier.yaml"):
        assert (share / installed).is_file(), installed
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "adu_perception").is_file()

    # What `source install/setup.bash` does for this package: its site-packages first.
    site = next((prefix / "lib").glob("python3*/site-packages"))
    run_env = {**env, "PYTHONPATH": f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}",
               "AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}{env.get('AMENT_PREFIX_PATH', '')}"}
    where = subprocess.run([sys.executable, "-c", "import adu_perception.ros_node.classifier_node "
                            "as m; print(m.__file__)"], env=run_env, capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    started = subprocess.run([str(executable), "--ros-args", "-p", f"bundle:={tmp_path / 'nope'}"],
                             env=run_env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert started.returncode == 1
    assert "cannot start: bundle folder not found" in started.stderr
    assert "Traceback" not in started.stderr
