"""`colcon build` of the package in a scratch workspace installs a ROS-style executable
(lib/adu_perception/classifier_node), the launch files and the config, and the installed
node starts far enough to refuse a missing bundle with one clear line."""
import os
import subprocess
import sys

from ros_conftest_helpers import REPO, colcon_install  # noqa: F401 (fixture)


def test_colcon_build_installs_a_runnable_node(colcon_install):
    prefix, workspace, run_env = colcon_install["prefix"], colcon_install["workspace"], colcon_install["env"]
    executable = prefix / "lib" / "adu_perception" / "classifier_node"
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = prefix / "share" / "adu_perception"
    for installed in ("package.xml", "launch/classifier.launch.py", "launch/two_cameras.launch.py",
                      "config/classifier.yaml"):
        assert (share / installed).is_file(), installed
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "adu_perception").is_file()

    # What `source install/setup.bash` does for this package: its site-packages first.
    where = subprocess.run([sys.executable, "-c", "import adu_perception.ros_node.classifier_node "
                            "as m; print(m.__file__)"], env=run_env, capture_output=True, text=True,
                           cwd=workspace, timeout=60)
    assert where.stdout.strip().startswith(str(colcon_install["site"])), where.stdout + where.stderr
    # The installed node finds vision_msgs (built into the venv from ../shared/vendor by `make
    # install`, or a ROS install's own) and says which outputs would be off without it.
    found = subprocess.run([sys.executable, "-c", "from adu_perception.ros_node import vision_io; "
                            "print(vision_io.AVAILABLE)"], env=run_env, capture_output=True,
                           text=True, cwd=workspace, timeout=60)
    vendored = (REPO.parent / "shared" / "vendor" / "vision_msgs").is_dir()
    assert found.stdout.strip() == ("True" if vendored else found.stdout.strip()), found.stderr
    started = subprocess.run([str(executable), "--ros-args", "-p", f"bundle:={workspace / 'nope'}"],
                             env=run_env, capture_output=True, text=True, cwd=workspace, timeout=60)
    assert started.returncode == 1
    assert "cannot start: bundle folder not found" in started.stderr
    assert "Traceback" not in started.stderr
