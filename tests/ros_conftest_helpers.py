"""Fixtures and helpers for the runtime, node and replay tests.

`runtime_bundle` is the export stage's `tiny_bundle` (a tiny random open_clip model really
exported) when that fixture exists; otherwise `color_bundle`: a small real ONNX graph with
the bundle's I/O contract, written with onnx.helper, whose answers follow the mean colour:

    green -> domain photo (memorized), class car      -> reported
    red   -> domain cartoon (forgotten), class truck  -> suppressed, forgotten_domain
    blue  -> domain sketch (forgotten), class person  -> suppressed, forgotten_domain
    grey  -> domain photo, all classes equal (1/3)    -> suppressed, low_confidence

Test modules import the fixtures they use from here (the lead owns conftest.py), including
the ones those depend on (runtime_bundle needs color_bundle imported beside it).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from adu_perception.runtime.bundle import sha256_file

REPO = Path(__file__).resolve().parents[1]
DRIVING_CROPS = REPO.parent / "shared" / "data" / "driving_crops"

COLOR_CLASSES = ["car", "truck", "person"]
COLOR_DOMAINS = ["photo", "cartoon", "sketch"]
COLOR_FORGOTTEN = ["cartoon", "sketch"]
COLOR_SIZE = 32
COLOR_EMBEDDING = 8
CLIP_MEAN = [0.4815, 0.4578, 0.4082]
CLIP_STD = [0.2686, 0.2613, 0.2758]


def write_color_bundle(folder, input_size: int = COLOR_SIZE, confidence: float = 0.5,
                       forgotten_domain: float = 0.5, opset: int = 17) -> Path:
    """Write model.onnx + manifest.json (docs/bundle.md) of the colour model; returns folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Rows: mean R, G, B (0..1). Columns follow COLOR_CLASSES / COLOR_DOMAINS.
    swap_rg = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    class_w = 10.0 * swap_rg   # G -> car, R -> truck, B -> person
    domain_w = 10.0 * swap_rg  # G -> photo, R -> cartoon, B -> sketch
    domain_b = np.array([3.0, 0.0, 0.0], np.float32)  # grey (no dominant colour) -> photo
    embed_w = np.random.default_rng(0).standard_normal((3, COLOR_EMBEDDING)).astype(np.float32)
    constants = [numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
                 numpy_helper.from_array(class_w, "class_w"),
                 numpy_helper.from_array(domain_w, "domain_w"),
                 numpy_helper.from_array(domain_b, "domain_b"),
                 numpy_helper.from_array(embed_w, "embed_w")]
    nodes = [
        helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["as_float", "scale"], ["unit"]),
        helper.make_node("ReduceMean", ["unit"], ["mean_rgb"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean_rgb", "class_w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["mean_rgb", "domain_w"], ["domain_scores"]),
        helper.make_node("Add", ["domain_scores", "domain_b"], ["domain_logits"]),
        helper.make_node("Softmax", ["domain_logits"], ["domain_probs"], axis=-1),
        helper.make_node("MatMul", ["mean_rgb", "embed_w"], ["raw_embeddings"]),
        helper.make_node("LpNormalization", ["raw_embeddings"], ["embeddings"], axis=-1, p=2),
    ]
    n_classes, n_domains = len(COLOR_CLASSES), len(COLOR_DOMAINS)
    graph = helper.make_graph(
        nodes, "color_bundle",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", input_size, input_size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_classes]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_classes]),
         helper.make_tensor_value_info("domain_probs", TensorProto.FLOAT, ["batch", n_domains]),
         helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", COLOR_EMBEDDING])],
        constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {
        "format": "adu-bundle", "format_version": 1, "model_file": "model.onnx",
        "model_sha256": sha256_file(folder / "model.onnx"), "opset": opset,
        "input_name": "images", "output_names": ["probs", "logits", "domain_probs", "embeddings"],
        "input_size": input_size, "embedding_dim": COLOR_EMBEDDING,
        "preprocessing": {"color": "RGB", "dtype": "uint8", "layout": "NHWC",
                          "resize": "shorter_side", "interpolation": "bicubic_up_area_down", "crop": "center",
                          "mean": CLIP_MEAN, "std": CLIP_STD, "normalization": "in_graph"},
        "class_names": COLOR_CLASSES, "domain_names": COLOR_DOMAINS,
        "memorized_domains": ["photo"], "forgotten_domains": COLOR_FORGOTTEN,
        "thresholds": {"confidence": confidence, "forgotten_domain": forgotten_domain,
                       "rule": "suppress if sum(domain_probs[forgotten]) >= forgotten_domain, "
                               "else suppress if max(probs) < confidence"},
        "parity": {}, "source": {"method": "synthetic-test-graph"},
        "created_utc": "2026-11-25T00:00:00Z", "versions": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def color_bundle(tmp_path_factory) -> Path:
    return write_color_bundle(tmp_path_factory.mktemp("color_bundle") / "bundle")


@pytest.fixture(scope="session")
def runtime_bundle(request, color_bundle) -> Path:
    """The exported tiny bundle when the export stage provides it, else the colour bundle."""
    try:
        return Path(request.getfixturevalue("tiny_bundle"))
    except pytest.FixtureLookupError:
        return color_bundle


@pytest.fixture(scope="session", autouse=True)
def ros_domain():
    """A ROS domain of our own for this test session (no cross-talk with other sessions
    on the machine), traffic kept on this host."""
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return int(os.environ["ROS_DOMAIN_ID"])


def copy_bundle(bundle: Path, destination: Path) -> Path:
    """A private copy of a bundle folder to damage in a test."""
    shutil.copytree(bundle, destination)
    return destination


def solid(rgb, width: int = 64, height: int = 48) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb
    return image


# -- encoding RGB into the raw layouts a camera driver publishes ---------------------------------

BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1,
                   "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2}


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB [H, W, 3] -> pixels [H, W, bytes per pixel] in `encoding`."""
    conversions = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                   "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY,
                   "yuv422": cv2.COLOR_RGB2YUV_UYVY, "uyvy": cv2.COLOR_RGB2YUV_UYVY,
                   "yuyv": cv2.COLOR_RGB2YUV_YUYV, "yuv422_yuy2": cv2.COLOR_RGB2YUV_YUYV}
    pixels = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, conversions[encoding])
    return pixels.reshape(rgb.shape[0], rgb.shape[1], BYTES_PER_PIXEL[encoding])


def raw_frame(rgb: np.ndarray, encoding: str, padding: int = 0):
    """(bytes, step) of `rgb` in `encoding` with `padding` junk bytes after every row."""
    pixels = encode(rgb, encoding)
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    return padded.tobytes(), padded.shape[1]


def image_msg(rgb: np.ndarray, encoding: str = "rgb8", padding: int = 0, stamp=(0, 0),
              frame_id: str = "camera"):
    """A real sensor_msgs/Image of `rgb` in `encoding` (rows padded by `padding` bytes)."""
    from sensor_msgs.msg import Image

    data, step = raw_frame(rgb, encoding, padding)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


YUV_TO_RGB = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
              "yuyv": cv2.COLOR_YUV2RGB_YUYV, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV}


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """What decoding `encode(rgb, encoding)` should give (lossy for mono8 and 4:2:2), from
    OpenCV's own conversions of the packed pixels, not from the code under test."""
    if encoding == "mono8":
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if encoding in YUV_TO_RGB:
        return cv2.cvtColor(encode(rgb, encoding), YUV_TO_RGB[encoding])
    return rgb


# -- MCAP schemas (ros2msg text, as `ros2 bag record` stores them) --------------------------------

_HEADER_DEFS = """================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec"""

IMAGE_MSGDEF = """std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
""" + _HEADER_DEFS

COMPRESSED_IMAGE_MSGDEF = """std_msgs/Header header
string format
uint8[] data
""" + _HEADER_DEFS


def driving_crops(kind: str = "vehicles", limit: int = 8):
    """Paths of real camera crops from ../shared, or skip the test when they are absent."""
    folder = DRIVING_CROPS / kind
    files = sorted(folder.glob("*.png"))[:limit] if folder.is_dir() else []
    if not files:
        pytest.skip(f"shared real camera crops not found at {folder} (needs ../shared/data)")
    return files


# -- the package built by colcon, as on a ROS machine ---------------------------------------------

VENV_BIN = Path(sys.executable).parent
COLCON = VENV_BIN / "colcon"
NOT_SOURCES = (".venv", ".git", "build", "install", "log", "__pycache__", ".pytest_cache",
               "*.egg-info", "runs", "bundles")


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> dict:
    """`colcon build` of a copy of this repository in a scratch workspace (once per session):
    {"workspace", "prefix" (install/adu_perception), "env" (what sourcing install/setup.bash
    sets for this package: its site-packages first, its prefix on AMENT_PREFIX_PATH)}."""
    if not COLCON.exists():
        pytest.skip(f"colcon is not installed in {VENV_BIN} (run `make install`)")
    workspace = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(REPO, workspace / "src" / "adu_perception",
                    ignore=shutil.ignore_patterns(*NOT_SOURCES))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    build = subprocess.run([str(COLCON), "build", "--base-paths", str(workspace / "src")],
                           cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = workspace / "install" / "adu_perception"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    run_env = {**env, "PYTHONPATH": f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}",
               "AMENT_PREFIX_PATH": f"{prefix}{os.pathsep}{env.get('AMENT_PREFIX_PATH', '')}"}
    return {"workspace": workspace, "prefix": prefix, "site": site, "env": run_env}
