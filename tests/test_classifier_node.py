"""The ROS 2 classifier node, in-process with real rclpy (Fast DDS) and real ONNX Runtime:
every encoding answered with the header copied, bad frames skipped without stopping it,
regions, run-time parameters, overlay, diagnostics levels, overload (newest frame only, made
deterministic by holding the real predictor at a gate), inference failures, extreme frames,
out-of-frame regions, start-up refusals, and no torch import. Across processes:
tests/test_node_processes.py."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import psutil
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from adu_perception.ros_node.classifier_node import ClassifierNode
from adu_perception.runtime.bundle import BundleError
from adu_perception.runtime.images import preprocess
from adu_perception.runtime.predictor import Predictor
from ros_conftest_helpers import (color_bundle, driving_crops, expected_rgb, image_msg,  # noqa: F401
                                  ros_domain, runtime_bundle, solid)

TIMEOUT = 10.0
GATE_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def ros(ros_domain):
    rclpy.init()
    yield
    rclpy.shutdown()


class Harness:
    """A ClassifierNode plus a tester node (camera publisher, result/overlay/diagnostics
    subscribers), spun by a MultiThreadedExecutor in a background thread."""

    def __init__(self, namespace: str, bundle, watch_overlay: bool = False, **parameters):
        overrides = [Parameter("bundle", value=str(bundle))] + \
            [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = ClassifierNode(namespace=namespace, parameter_overrides=overrides)
        self.tester = rclpy.create_node("tester", namespace=namespace)
        image_type, topic = ((CompressedImage, "image/compressed") if parameters.get("compressed")
                             else (Image, "image"))
        self.camera = self.tester.create_publisher(image_type, topic, 10)
        self.results, self.overlays, self.diagnostics = [], [], []
        self.cond = threading.Condition()
        base = f"{namespace}/classifier_node"
        self.tester.create_subscription(String, f"{base}/classification",
                                        lambda m: self._add(self.results, json.loads(m.data)), 50)
        if watch_overlay:  # only when asked: the node draws overlays only for subscribers
            self.tester.create_subscription(Image, f"{base}/overlay",
                                            lambda m: self._add(self.overlays, m), 10)
        self.tester.create_subscription(DiagnosticArray, "/diagnostics",
                                        lambda m: self._add(self.diagnostics, m), 50)
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.wait(lambda: self.camera.get_subscription_count() > 0, "node subscribed to the camera")

    def _add(self, items, value):
        with self.cond:
            items.append(value)
            self.cond.notify_all()

    def wait(self, predicate, what: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for: {what}"
                self.cond.wait(min(left, 0.05))

    def answer(self, frame_id: str, timeout: float = TIMEOUT) -> dict:
        """The JSON result for the frame published with this frame_id."""
        found = []

        def match():
            found[:] = [r for r in self.results if r["frame_id"] == frame_id]
            return bool(found)

        self.wait(match, f"result for frame {frame_id!r}", timeout)
        return found[0]

    def ask(self, msg) -> dict:
        self.camera.publish(msg)
        return self.answer(msg.header.frame_id)

    def set(self, **parameters):
        return self.node.set_parameters([Parameter(k, value=v) for k, v in parameters.items()])

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        self.tester.destroy_node()


@pytest.fixture
def harness_factory(ros):
    made = []

    def make(namespace, bundle, watch_overlay=False, **parameters):
        made.append(Harness(namespace, bundle, watch_overlay, **parameters))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def random_frame(seed: int, width: int = 80, height: int = 60) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


ENCODING_CASES = [("rgb8", 0), ("bgr8", 0), ("rgba8", 0), ("bgra8", 0), ("mono8", 0),
                  ("yuv422", 0), ("yuyv", 0), ("bgr8", 13), ("mono8", 3), ("yuv422", 6)]


def test_every_encoding_is_answered_with_the_header_copied(harness_factory, runtime_bundle):
    harness = harness_factory("/enc", runtime_bundle, top_k=2)
    predictor = Predictor(runtime_bundle)
    for index, (encoding, padding) in enumerate(ENCODING_CASES):
        rgb = random_frame(index)
        frame_id = f"cam_{encoding}_pad{padding}"
        result = harness.ask(image_msg(rgb, encoding, padding, stamp=(1000 + index, 777 + index),
                                       frame_id=frame_id))
        assert result["stamp"] == {"sec": 1000 + index, "nanosec": 777 + index}
        assert (result["width"], result["height"]) == (80, 60)
        assert result["backend"] == harness.node.predictor.backend == predictor.backend
        (item,) = result["results"]
        assert item["region"] == [0, 0, 80, 60]
        assert len(item["top_k"]) == min(2, len(predictor.bundle.class_names))
        assert set(item) >= {"label", "score", "suppressed", "reason", "domain", "top_k", "region"}
        # The node's answer is exactly what the runtime says about the decoded frame.
        (direct,) = predictor.classify(preprocess([expected_rgb(rgb, encoding)],
                                                  predictor.bundle.input_size), top_k=2)
        assert (item["reason"], item["label"], item["domain"]) == (direct.reason, direct.label,
                                                                   direct.domain), encoding
        assert item["score"] == pytest.approx(direct.score, abs=1e-5)
        assert item["suppressed"] == (not direct.reported)
    assert harness.node.stats()["invalid"] == 0


def test_real_camera_crop_is_classified_like_the_runtime(harness_factory, runtime_bundle):
    path = driving_crops("vehicles", limit=1)[0]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    harness = harness_factory("/real", runtime_bundle)
    result = harness.ask(image_msg(rgb, "bgr8", frame_id="kitti_crop"))
    predictor = Predictor(runtime_bundle)
    (direct,) = predictor.classify(preprocess([rgb], predictor.bundle.input_size))
    assert result["results"][0]["reason"] == direct.reason
    assert result["results"][0]["score"] == pytest.approx(direct.score, abs=1e-5)


def test_malformed_frames_are_skipped_and_counted_and_the_node_keeps_answering(
        harness_factory, runtime_bundle, capfd):
    harness = harness_factory("/bad", runtime_bundle, diagnostics_period=0.2)
    good = image_msg(random_frame(1), "rgb8", frame_id="good_before")
    harness.ask(good)
    bayer = image_msg(random_frame(2), "rgb8", frame_id="bayer")
    bayer.encoding = "bayer_rggb8"
    short = image_msg(random_frame(3), "bgr8", frame_id="short")
    short.data = bytes(short.data)[:-5]
    empty = Image(encoding="rgb8")  # 0 x 0, no data
    empty.header.frame_id = "empty"
    bad_step = image_msg(random_frame(4), "rgb8", frame_id="bad_step")
    bad_step.step = 10
    shorter = image_msg(random_frame(6), "bgr8", frame_id="shorter")  # the same problem, other numbers
    shorter.data = bytes(shorter.data)[:-9]
    for count, msg in enumerate((bayer, short, empty, bad_step, shorter), start=1):
        harness.camera.publish(msg)  # one at a time, so none is dropped as stale
        harness.wait(lambda: harness.node.stats()["invalid"] == count,
                     f"frame {msg.header.frame_id!r} counted invalid")
    after = harness.ask(image_msg(random_frame(5), "bgr8", frame_id="good_after"))
    assert after["results"]
    # each bad frame is answered with why and no result (no detector: no box to answer for)
    answered = {r["frame_id"]: r for r in harness.results if "error" in r}
    assert set(answered) == {"bayer", "short", "empty", "bad_step", "shorter"}
    assert all(r["results"] == [] and r["width"] is None for r in answered.values())
    assert "unsupported encoding 'bayer_rggb8'" in answered["bayer"]["error"]
    # each kind of problem is named in the log at once (the throttle is per problem)
    logged = capfd.readouterr().err
    assert all(f"skipping frame from '{name}'" in logged for name in answered if name != "shorter"), logged
    assert "skipping frame from 'shorter'" not in logged  # throttled: the same kind as 'short'

    def reported():
        """Diagnostics values once they count the 5 bad frames and both good ones."""
        for array in harness.diagnostics:
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if "classifier_node: " in status.name and values.get("frames_invalid") == "5" \
                        and values.get("frames_processed") == "2":
                    return values
        return None

    harness.wait(lambda: reported() is not None, "diagnostics counting 5 invalid, 2 processed")
    values = reported()
    assert values["backend"] == harness.node.predictor.backend
    assert status_level(harness, "invalid frames skipped") == WARN
    assert values["frames_received"] == "7" and values["frames_dropped"] == "0"
    assert float(values["latency_p50_ms"]) > 0
    assert {"latency_p95_ms", "latency_p99_ms", "processing_rate_hz"} <= set(values)


def billboard_and_car(width=200, height=100) -> np.ndarray:
    """Left half: a red poster (the colour bundle's forgotten 'cartoon' domain);
    right half: a green real car (photo, class car)."""
    frame = solid((210, 20, 20), width, height)
    frame[:, width // 2:] = (20, 200, 30)
    return frame


def test_regions_grid_parameters_and_overlay(harness_factory, color_bundle):
    harness = harness_factory("/regions", color_bundle, watch_overlay=True,
                              regions=[0, 0, 100, 100, 100, 0, 100, 100])
    poster, car = harness.ask(image_msg(billboard_and_car(), "bgr8", frame_id="f1"))["results"]
    assert poster["region"] == [0, 0, 100, 100] and poster["suppressed"]
    assert (poster["reason"], poster["domain"]) == ("forgotten_domain", "cartoon")
    assert car["region"] == [100, 0, 100, 100] and not car["suppressed"]
    assert (car["label"], car["domain"]) == ("car", "photo")

    # Run-time changes: the same two halves as a 1x2 grid; then a stricter confidence.
    assert all(r.successful for r in harness.set(regions=[], grid_rows=1, grid_cols=2))
    poster, car = harness.ask(image_msg(billboard_and_car(), "rgb8", frame_id="f2"))["results"]
    assert (poster["region"], poster["suppressed"]) == ([0, 0, 100, 100], True)
    assert (car["region"], car["label"]) == ([100, 0, 100, 100], "car")
    assert all(r.successful for r in harness.set(confidence_threshold=1.0))
    _, car = harness.ask(image_msg(billboard_and_car(), "rgb8", frame_id="f3"))["results"]
    assert (car["suppressed"], car["reason"]) == (True, "low_confidence")

    # Invalid values are refused with a reason and leave the node as it was.
    (bad_range,) = harness.set(confidence_threshold=1.5)
    (bad_regions,) = harness.set(regions=[0, 0, 10])
    assert not bad_range.successful and not bad_regions.successful
    assert "4 integers" in bad_regions.reason
    assert harness.node.get_parameter("confidence_threshold").value == 1.0
    assert not harness.node.set_parameters([Parameter("backend", value="tensorrt")])[0].successful

    # Overlay: drawn only once somebody subscribes (the tester does), header copied.
    harness.set(confidence_threshold=0.5)
    harness.wait(lambda: harness.node._overlay_pub.get_subscription_count() > 0, "overlay subscriber")
    frame = billboard_and_car()
    harness.ask(image_msg(frame, "rgb8", frame_id="f4"))
    harness.wait(lambda: any(m.header.frame_id == "f4" for m in harness.overlays), "overlay of f4")
    overlay = next(m for m in harness.overlays if m.header.frame_id == "f4")
    assert (overlay.encoding, overlay.width, overlay.height) == ("rgb8", 200, 100)
    drawn = np.frombuffer(bytes(overlay.data), np.uint8).reshape(100, 200, 3)
    assert (drawn != frame).any(axis=2).mean() > 0.01  # boxes and labels were drawn


def test_compressed_input_with_reliable_qos(harness_factory, color_bundle):
    harness = harness_factory("/jpeg", color_bundle, compressed=True, qos="reliable")
    msg = CompressedImage(format="jpeg")
    msg.data = cv2.imencode(".jpg", cv2.cvtColor(solid((20, 200, 30)), cv2.COLOR_RGB2BGR))[1].tobytes()
    msg.header.frame_id = "jpeg_frame"
    msg.header.stamp.sec = 42
    result = harness.ask(msg)
    assert result["stamp"]["sec"] == 42 and result["results"][0]["label"] == "car"
    garbage = CompressedImage(format="jpeg", data=b"\xff\xd8 not really a jpeg")
    garbage.header.frame_id = "garbage"
    harness.camera.publish(garbage)
    harness.wait(lambda: harness.node.stats()["invalid"] == 1, "undecodable frame counted")


class GatedPredictor:
    """The node's own predictor, held at a gate: the test decides when an inference ends (so
    frames arrive while the model is busy, on any machine). Optionally fails once."""

    def __init__(self, predictor, fail_once: bool = False):
        self.predictor, self.fail_once = predictor, fail_once
        self.entered, self.release = threading.Event(), threading.Event()

    def classify_crops(self, *args, **kwargs):
        self.entered.set()
        # Only a safety net: a loaded CI machine may take long to publish the test's burst.
        assert self.release.wait(GATE_TIMEOUT), "the test never opened the gate"
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("backend failure injected by the test")
        return self.predictor.classify_crops(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.predictor, name)


WARN, ERROR = 1, 2


def status_level(harness, fragment: str):
    """The highest diagnostics level reported so far with `fragment` in its message."""
    with harness.cond:
        levels = [status.level[0] if isinstance(status.level, bytes) else status.level
                  for array in harness.diagnostics for status in array.status
                  if fragment in status.message]
    return max(levels, default=None)


def test_overload_drops_stale_frames_without_queueing_or_memory_growth(harness_factory,
                                                                          runtime_bundle):
    harness = harness_factory("/load", runtime_bundle, log_throttle_sec=1.0, diagnostics_period=0.2)
    frames = [image_msg(random_frame(i, 640, 480), "bgr8") for i in range(4)]
    for i in range(3):  # warm-up: allocations settle before memory is measured
        frames[0].header.frame_id = f"warm{i}"
        harness.ask(frames[0])
    process = psutil.Process()
    rss_before = process.memory_info().rss
    gate = harness.node.predictor = GatedPredictor(harness.node.predictor)
    frames[0].header.frame_id = "busy"
    harness.camera.publish(frames[0])
    assert gate.entered.wait(TIMEOUT), "the worker never started on the first frame"
    received = harness.node.stats()["received"]
    burst = 60  # all arrive while the model is busy with "busy" (reliable QoS: none lost)
    for i in range(burst):
        msg = frames[i % len(frames)]
        msg.header.frame_id = f"burst{i}"
        harness.camera.publish(msg)
        harness.wait(lambda: harness.node.stats()["received"] == received + i + 1, f"burst{i} received")
    gate.release.set()
    harness.answer("busy")
    harness.answer(f"burst{burst - 1}")  # newest frame only: the last one is always answered
    harness.wait(lambda: harness.node.stats()["processed"] == 3 + 2, "both answers counted")
    stats = harness.node.stats()
    assert stats["dropped"] == burst - 1 and stats["errors"] == 0
    assert not any(r["frame_id"] in {f"burst{i}" for i in range(burst - 1)} for r in harness.results)
    growth_mb = (process.memory_info().rss - rss_before) / 2**20
    print(f"{burst} frames of 640x480 while busy: dropped {stats['dropped']}, RSS +{growth_mb:.1f} MiB")
    assert growth_mb < 50  # 60 queued frames would be 55 MB
    harness.wait(lambda: status_level(harness, "dropped or lost") == WARN,
                 "diagnostics WARN on the drop ratio")


def test_inference_error_is_counted_reported_as_error_and_the_node_keeps_answering(
        harness_factory, color_bundle):
    harness = harness_factory("/fail", color_bundle, diagnostics_period=0.2)
    gate = harness.node.predictor = GatedPredictor(harness.node.predictor, fail_once=True)
    gate.release.set()
    harness.camera.publish(image_msg(solid((20, 200, 30)), frame_id="fails"))
    harness.wait(lambda: harness.node.stats()["errors"] == 1, "the failure counted")
    assert harness.ask(image_msg(solid((20, 200, 30)), frame_id="after"))["results"][0]["label"] == "car"
    harness.wait(lambda: status_level(harness, "inference errors") == ERROR, "diagnostics ERROR")
    assert not any(r["frame_id"] == "fails" for r in harness.results)


def test_extreme_aspect_ratio_and_out_of_frame_regions(harness_factory, color_bundle):
    harness = harness_factory("/odd", color_bundle)
    strip = solid((20, 200, 30), 60000, 8)  # 1.4 MB bgr8: cropped before it is enlarged
    (item,) = harness.ask(image_msg(strip, "bgr8", frame_id="strip"))["results"]
    assert (item["region"], item["label"]) == ([0, 0, 60000, 8], "car")
    # a crop under MIN_CROP_SIDE px is a few enlarged pixels: not classified, and said
    (thin,) = harness.ask(image_msg(solid((20, 200, 30), 60000, 1), "bgr8", frame_id="thin"))["results"]
    assert (thin["reason"], thin["suppressed"], thin["top_k"]) == ("too_small", True, [])
    # Once the camera's resolution is known, regions outside it are refused with the reason.
    harness.ask(image_msg(billboard_and_car(), "rgb8", frame_id="sized"))
    (refused,) = harness.set(regions=[0, 0, 50, 50, 500, 500, 10, 10])
    assert not refused.successful and "outside the camera's 200x100 frames" in refused.reason
    assert harness.node._value("regions") == [] and harness.node.settings.regions == ()
    # A region partly inside is clipped; the frame size changing under a region is reported per
    # region (suppressed, reason outside_frame) while the others are still classified.
    assert harness.set(regions=[100, 0, 150, 100, 150, 50, 40, 40])[0].successful
    small = harness.ask(image_msg(solid((20, 200, 30), 120, 60), "rgb8", frame_id="smaller"))
    inside, outside = small["results"]
    assert (inside["region"], inside["label"]) == ([100, 0, 20, 60], "car")
    assert (outside["reason"], outside["suppressed"], outside["id"]) == ("outside_frame", True, "1")
    assert harness.node.stats()["boxes_unclassified"] == 2  # outside the frame, too small


def test_bad_boxes_and_bad_frames_still_get_one_answer_per_box(harness_factory, color_bundle, capfd):
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    harness = harness_factory("/boxes", color_bundle, use_detections=True)
    detector = harness.tester.create_publisher(vision_msgs.Detection2DArray, "/boxes/detections", 10)
    harness.wait(lambda: detector.get_subscription_count() > 0, "node subscribed to the detector")

    def send(image, items, frame_id=None):
        """items: (id, centre x, centre y, size x, size y) in float pixels."""
        array = vision_msgs.Detection2DArray()
        array.header.stamp = image.header.stamp
        array.header.frame_id = image.header.frame_id if frame_id is None else frame_id
        for box_id, cx, cy, sx, sy in items:
            detection = vision_msgs.Detection2D(header=image.header, id=box_id)
            detection.bbox.center.position.x, detection.bbox.center.position.y = cx, cy
            detection.bbox.size_x, detection.bbox.size_y = sx, sy
            array.detections.append(detection)
        detector.publish(array)
        return {r["id"]: r for r in harness.ask(image)["results"]}

    good = ("car", 150.0, 50.0, 60.0, 60.0)
    bad = [("nan", float("nan"), 50.0, 10.0, 10.0), ("overflow", 1.5e308, 50.0, 1e308, 10.0),
           ("flat", 50.0, 50.0, 0.0, 20.0), ("negative", 50.0, 50.0, -20.0, -20.0)]
    results = send(image_msg(billboard_and_car(), "rgb8", stamp=(5, 0), frame_id="mixed"), [good, *bad])
    assert (results["car"]["reported"], results["car"]["label"]) == (True, "car")  # not lost with them
    for box_id, *_ in bad:
        assert (results[box_id]["reason"], results[box_id]["region"]) == ("invalid_box", None), box_id
    # an unreadable image: each of its boxes is answered as suppressed, with the header and why
    broken = image_msg(billboard_and_car(), "rgb8", stamp=(6, 0), frame_id="broken")
    broken.encoding = "32FC1"
    answer = send(broken, [good, ("sign", 40.0, 40.0, 20.0, 20.0)])
    assert {r["reason"] for r in answer.values()} == {"invalid_frame"} and len(answer) == 2
    harness.wait(lambda: harness.node.stats()["boxes_unclassified"] == len(bad) + 2,
                 "the bad and the unreadable frame's boxes counted as not classified")
    (message,) = [r for r in harness.results if r["frame_id"] == "broken"]
    assert "unsupported encoding '32fc1'" in message["error"].lower() and message["stamp"]["sec"] == 6
    assert send(image_msg(billboard_and_car(), "rgb8", stamp=(7, 0), frame_id="after"), [good])["car"]["reported"]
    # a frame whose boxes never come waits, and /diagnostics shows it before any eviction
    harness.camera.publish(image_msg(billboard_and_car(), "rgb8", stamp=(9, 0), frame_id="alone"))

    def waiting_images():
        return [kv.value for array in harness.diagnostics for status in array.status
                for kv in status.values if kv.key == "waiting_images"]
    harness.wait(lambda: "1" in waiting_images(), "diagnostics showing one image waiting for its boxes")
    # boxes from another camera's frame, paired by stamp: used, and said
    send(image_msg(billboard_and_car(), "rgb8", stamp=(8, 0), frame_id="left"), [good], frame_id="right")
    assert "detections in frame 'right' paired by stamp with an image in frame 'left'" in capfd.readouterr().err


def test_regions_cannot_be_deleted_at_run_time(harness_factory, color_bundle):
    from rcl_interfaces.msg import ParameterType

    harness = harness_factory("/keep", color_bundle)
    assert harness.set(regions=[0, 0, 50, 50])[0].successful
    (refused,) = harness.node.set_parameters([Parameter("regions", Parameter.Type.NOT_SET)])
    assert not refused.successful and "cannot be deleted" in refused.reason
    assert ParameterType.PARAMETER_INTEGER_ARRAY == harness.node.get_parameter("regions").type_.value
    # later changes still apply, and what the node uses is what its parameters say
    assert harness.set(confidence_threshold=0.99)[0].successful
    assert harness.node.settings.confidence == 0.99 and harness.node.settings.regions == ((0, 0, 50, 50),)


def test_start_up_refusals_are_one_clear_line(ros, tmp_path, color_bundle):
    with pytest.raises(BundleError, match="bundle folder not found"):
        ClassifierNode(parameter_overrides=[Parameter("bundle", value=str(tmp_path / "nope"))])
    for arguments, message in (([f"bundle:={tmp_path / 'nope'}"], "bundle folder not found"),
                               ([], "parameter 'bundle' is not set"),
                               ([f"bundle:={color_bundle}", "backend:=cuda-please"],
                                "parameter backend='cuda-please': choose one of auto"),
                               ([f"bundle:={color_bundle}", "qos:=fast"],
                                "parameter qos='fast': choose one of reliable, sensor_data"),
                               ([f"bundle:={color_bundle}", "confidence_threshold:=3.0"],
                                "confidence_threshold"),
                               ([f"bundle:={color_bundle}", "top_k:=abc"], "top_k")):
        ros_args = [item for a in arguments for item in ("-p", a)]
        run = subprocess.run([sys.executable, "-m", "adu_perception.ros_node.classifier_node",
                              "--ros-args", *ros_args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 1, run.stderr
        assert "cannot start" in run.stderr and message in run.stderr
        assert "Traceback" not in run.stderr
        assert len([line for line in run.stderr.splitlines() if "cannot start" in line]) == 1
    # a parameter file rcl cannot parse (one line too, before the node exists)
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters:\n    confidence_threshold: [0.5\n")
    run = subprocess.run([sys.executable, "-m", "adu_perception.ros_node.classifier_node", "--ros-args",
                          "-p", f"bundle:={color_bundle}", "--params-file", str(broken)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "cannot start" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_node_and_runtime_import_no_torch_nor_export_or_training(runtime_bundle):
    code = ("import sys\n"
            "import adu_perception.ros_node.classifier_node\n"
            "import adu_perception.ros_node.commands, adu_perception.runtime.replay\n"
            "from adu_perception.runtime.predictor import Predictor\n"
            f"Predictor({str(runtime_bundle)!r})\n"
            "from adu_perception.runtime.predictor import find_engine\n"
            "print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith(\n"
            "      ('adu_perception.export', 'adu_perception.training'))))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False []"  # no torch, nothing from export/ or training/


def test_node_benchmark_measures_end_to_end_and_bare_inference(ros_domain, color_bundle, tmp_path):
    from adu_perception.ros_node.node_benchmark import run_benchmark

    lines = []
    result = run_benchmark(color_bundle, frames=10, warmup=2, frame_size="128x96",
                           json_out=tmp_path / "node.json", echo=lines.append)
    assert result["lost_frames"] == 0 and result["end_to_end"]["n"] == 10
    assert result["bare_inference"]["n"] == result["bare_inference_paced"]["n"] == 10
    assert result["end_to_end"]["median_ms"] > 0 and result["bare_inference"]["median_ms"] > 0
    assert result["overhead_ratio"] == pytest.approx(
        result["end_to_end"]["median_ms"] / result["bare_inference_paced"]["median_ms"])
    assert "overhead: end to end / interleaved bare" in lines[0]
    assert json.loads((tmp_path / "node.json").read_text())["backend"] == Predictor(color_bundle).backend


def test_node_benchmark_with_detections_times_stamp_to_outputs_and_batching(ros_domain, color_bundle,
                                                                            tmp_path):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run `make "
                        "install` with ../shared/vendor beside the repository")
    from adu_perception import cli

    out = tmp_path / "detections.json"
    assert cli.main(["benchmark", "node", "--bundle", str(color_bundle), "--detections", "1,4",
                     "--frames", "4", "--warmup", "1", "--frame-size", "160x120",
                     "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["boxes"] for row in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["lost_frames"] == 0 and row["end_to_end_from_stamp"]["n"] == 4
        assert row["per_box_ms"] == pytest.approx(row["end_to_end_from_stamp"]["median_ms"] / row["boxes"])
        assert row["ratio"] == pytest.approx(row["batched"]["median_ms"] / row["single_calls"]["median_ms"])
    assert result["batch_goal_met"] is None  # the goal is stated at 32 boxes


def test_without_vision_msgs_the_node_says_which_outputs_are_off(ros_domain, color_bundle):
    """As on a ROS install without vision_msgs (its import made to fail): the node still runs
    with the JSON channel and names what is off; use_detections is refused in one line."""
    hide = ("import sys; sys.modules['vision_msgs'] = sys.modules['vision_msgs.msg'] = None\n"
            "from adu_perception.ros_node.classifier_node import main\n"
            "sys.exit(main(sys.argv))\n")
    refused = subprocess.run([sys.executable, "-c", hide, "--ros-args", "-p", f"bundle:={color_bundle}",
                              "-p", "use_detections:=true"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "cannot start: use_detections:=true needs vision_msgs" in refused.stderr
    node = subprocess.Popen([sys.executable, "-c", hide, "--ros-args", "-p", f"bundle:={color_bundle}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in node.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        output = "".join(lines)
        assert "~/detections, ~/suppressed and ~/label_info are off" in output, output
    finally:
        node.send_signal(signal.SIGINT)
        assert node.wait(timeout=TIMEOUT) == 0


def test_region_mode_speaks_vision_msgs_too_and_label_info_is_latched(harness_factory, color_bundle):
    vision = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run "
                                 "`make install` with ../shared/vendor beside the repository")
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    harness = harness_factory("/vm", color_bundle, regions=[0, 0, 100, 100, 100, 0, 100, 100])
    arrays = {}
    base = "/vm/classifier_node"
    for topic in ("detections", "suppressed"):
        harness.tester.create_subscription(
            vision.Detection2DArray, f"{base}/{topic}",
            lambda m, topic=topic: harness._add(arrays.setdefault(topic, []), m), 10)
    labels = []  # subscribed after the node published it: transient local delivers it anyway
    harness.tester.create_subscription(vision.LabelInfo, f"{base}/label_info", lambda m: harness._add(
        labels, m), QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                               reliability=ReliabilityPolicy.RELIABLE))
    harness.wait(lambda: labels, "the latched LabelInfo")
    assert [(c.class_id, c.class_name) for c in labels[0].class_map] == [(0, "car"), (1, "truck"),
                                                                         (2, "person")]
    assert labels[0].threshold == pytest.approx(0.5)
    harness.wait(lambda: harness.node._vision_pubs["reported"].get_subscription_count() > 0
                 and harness.node._vision_pubs["suppressed"].get_subscription_count() > 0,
                 "the tester's Detection2DArray subscriptions")
    harness.ask(image_msg(billboard_and_car(), "rgb8", stamp=(3, 4), frame_id="regions"))
    harness.wait(lambda: len(arrays.get("detections", [])) and len(arrays.get("suppressed", [])),
                 "both arrays")
    (car,), (poster,) = arrays["detections"][0].detections, arrays["suppressed"][0].detections
    assert (car.id, poster.id) == ("1", "0")  # one detection per region, id = its index
    assert (car.bbox.center.position.x, car.bbox.size_x, car.bbox.size_y) == (150.0, 100.0, 100.0)
    assert car.results[0].hypothesis.class_id == "car"
    for array in (arrays["detections"][0], arrays["suppressed"][0]):
        assert (array.header.stamp.sec, array.header.stamp.nanosec, array.header.frame_id) == (
            3, 4, "regions")
