"""ament_python package `adu_perception`.

The repository keeps the user's stage folders (training/, export/, ros_node/, demo/) at the
root; setuptools maps each under the one `adu_perception` namespace so that no bare top-level
name such as `training` or `export` lands in site-packages.
"""
from glob import glob

from setuptools import setup

PACKAGE = "adu_perception"
STAGE_FOLDERS = {
    f"{PACKAGE}": "adu_perception",
    f"{PACKAGE}.runtime": "adu_perception/runtime",
    f"{PACKAGE}.training": "training",
    f"{PACKAGE}.export": "export",
    f"{PACKAGE}.ros_node": "ros_node",
    f"{PACKAGE}.demo": "demo",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=list(STAGE_FOLDERS),
    package_dir=STAGE_FOLDERS,
    package_data={f"{PACKAGE}.training": ["configs/*.json"], f"{PACKAGE}.demo": ["*.json", "*.npz"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # Runtime dependencies are pinned in requirements.txt (installed by `make install`);
    # on a ROS machine rosdep resolves package.xml instead.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ADU perception team",
    maintainer_email="team@adu-perception.dev",
    description="Approximate Domain Unlearning for CLIP: training, ONNX/TensorRT export, ROS 2 node.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "adu = adu_perception.cli:main",
            "classifier_node = adu_perception.ros_node.classifier_node:main",
        ],
    },
)
