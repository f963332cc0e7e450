"""The node in its own process, as in a vehicle: a camera and a detector in this process talk to
it over real Fast DDS (not in-process shortcuts). Full-resolution frames in every encoding with
the detector's boxes; both outputs checked for header, ids, boxes and real versus illustrated
crops; unmatched stamps counted; a best-effort camera named clearly; signals under load."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_conftest_helpers import (color_bundle, image_msg, ros_domain,  # noqa: F401 (fixtures)
                                  runtime_bundle, solid)

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not installed: run "
                                  "`make install` with ../shared/vendor beside the repository")
TIMEOUT = 30.0
GREEN, RED = (20, 200, 30), (210, 20, 20)  # colour bundle: a real car / a forgotten-domain poster


class NodeProcess:
    """`python -m adu_perception.ros_node.classifier_node` in namespace /<name>, output kept."""

    def __init__(self, tmp_path, name: str, bundle, **parameters):
        self.log = open(tmp_path / f"{name}.log", "w+")
        arguments = ["-r", f"__ns:=/{name}", "-p", f"bundle:={bundle}"]
        for key, value in parameters.items():
            arguments += ["-p", f"{key}:={json.dumps(value) if isinstance(value, bool) else value}"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adu_perception.ros_node.classifier_node", "--ros-args",
             *arguments], stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # a terminal's default SIGINT disposition, whatever the test runner's was
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, *signals, gap: float = 0.0) -> int:
        for number in signals:
            if self.process.poll() is None:
                self.process.send_signal(number)
            time.sleep(gap)
        try:
            return self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the node did not exit:\n{self.output()}") from None


class Client:
    """Camera + detector publishers and result subscribers for the node in namespace /<name>."""

    def __init__(self, node, name: str, camera_qos=10):
        base = f"/{name}/classifier_node"
        self.node, self.cond, self.status_name = node, threading.Condition(), f"{base}: classification"
        self.camera = node.create_publisher(Image, f"/{name}/image", camera_qos)
        self.detector = node.create_publisher(vision_msgs.Detection2DArray, f"/{name}/detections", 10)
        self.got = {"reported": [], "suppressed": [], "json": [], "diagnostics": []}
        node.create_subscription(vision_msgs.Detection2DArray, f"{base}/detections",
                                 lambda m: self._add("reported", m), 50)
        node.create_subscription(vision_msgs.Detection2DArray, f"{base}/suppressed",
                                 lambda m: self._add("suppressed", m), 50)
        node.create_subscription(String, f"{base}/classification",
                                 lambda m: self._add("json", json.loads(m.data)), 50)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self._add("diagnostics", m), 50)

    def _add(self, kind, message):
        with self.cond:
            self.got[kind].append(message)
            self.cond.notify_all()

    def wait(self, predicate, what: str, node_process=None):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while not predicate():
                if node_process is not None and node_process.process.poll() is not None:
                    raise AssertionError(f"the node exited while waiting for {what}:\n"
                                         f"{node_process.output()}")
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}" + (
                    f"\n{node_process.output()}" if node_process else "")
                self.cond.wait(min(left, 0.1))

    def by_frame(self, kind, frame_id):
        key = (lambda m: m["frame_id"]) if kind == "json" else (lambda m: m.header.frame_id)
        with self.cond:
            return [m for m in self.got[kind] if key(m) == frame_id]

    def diagnostics_values(self):
        with self.cond:
            for array in reversed(self.got["diagnostics"]):
                for status in array.status:
                    if status.name == self.status_name:
                        yield status, {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="module")
def tester(ros_domain):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("process_tester", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def boxes(header, items):
    array = vision_msgs.Detection2DArray(header=header)
    for box_id, (x, y, w, h) in items:
        detection = vision_msgs.Detection2D(header=header, id=box_id)
        detection.bbox.center.position.x, detection.bbox.center.position.y = x + w / 2, y + h / 2
        detection.bbox.size_x, detection.bbox.size_y = float(w), float(h)
        array.detections.append(detection)
    return array


def street(width=640, height=480):
    """A real car (green) in the left half, a poster (red) in the right half."""
    frame = solid(GREEN, width, height)
    frame[:, width // 2:] = RED
    return frame


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "uyvy", "yuyv", "yuv422_yuy2"]
CAR, POSTER = (40, 60, 200, 300), (400, 100, 180, 240)


def test_full_frames_and_boxes_from_another_process_in_every_encoding(tester, color_bundle, tmp_path):
    node = NodeProcess(tmp_path, "xp", color_bundle, use_detections=True)
    client = Client(tester, "xp")  # default QoS (reliable), as camera drivers publish
    try:
        client.wait(lambda: client.camera.get_subscription_count() and
                    client.detector.get_subscription_count(), "the node's subscriptions", node)
        for index, encoding in enumerate(ENCODINGS):
            frame_id = f"cam_{encoding}"
            msg = image_msg(street(), encoding, padding=8 if index % 2 else 0,
                            stamp=(100 + index, 5000 + index), frame_id=frame_id)
            detections = boxes(msg.header, [("car-1", CAR), ("poster-2", POSTER)])
            if index % 2:  # either may come first
                client.detector.publish(detections)
                client.camera.publish(msg)
            else:
                client.camera.publish(msg)
                client.detector.publish(detections)
            client.wait(lambda: client.by_frame("reported", frame_id) and
                        client.by_frame("suppressed", frame_id) and client.by_frame("json", frame_id),
                        f"all three outputs for {frame_id}", node)
            (reported,), (suppressed,) = (client.by_frame("reported", frame_id),
                                          client.by_frame("suppressed", frame_id))
            for out in (reported, suppressed):
                assert out.header.stamp.sec == 100 + index and out.header.stamp.nanosec == 5000 + index
                for detection in out.detections:
                    assert detection.header.frame_id == frame_id
            if encoding == "mono8":  # no colour: neither crop is confidently a car
                assert not reported.detections
                assert sorted(d.id for d in suppressed.detections) == ["car-1", "poster-2"]
                continue
            (car,), (poster,) = reported.detections, suppressed.detections
            assert (car.id, poster.id) == ("car-1", "poster-2"), encoding
            for detection, (x, y, w, h) in ((car, CAR), (poster, POSTER)):
                assert (detection.bbox.center.position.x, detection.bbox.center.position.y,
                        detection.bbox.size_x, detection.bbox.size_y) == (x + w / 2, y + h / 2, w, h)
            assert car.results[0].hypothesis.class_id == "car"
            assert car.results[0].hypothesis.score > 0.5
            assert [h.hypothesis.class_id for h in poster.results][0] == "truck"  # top-k kept
            (debug,) = client.by_frame("json", frame_id)
            assert [(r["id"], r["reason"]) for r in debug["results"]] == [
                ("car-1", "reported"), ("poster-2", "forgotten_domain")]
            assert debug["stamp_latency_ms"] is not None
        # Every full-resolution frame crossed the process boundary: nothing lost or unmatched.
        client.wait(lambda: any(v.get("frames_processed") == str(len(ENCODINGS))
                                for _, v in client.diagnostics_values()), "diagnostics", node)
        _, values = next(client.diagnostics_values())
        assert values["frames_lost"] == "0" and values["unmatched_images"] == "0"
        assert values["vision_msgs_outputs"] == "on"
    finally:
        assert node.stop(signal.SIGINT) == 0, node.output()


def test_unmatched_stamps_are_counted_and_the_pairing_goes_on(tester, color_bundle, tmp_path):
    node = NodeProcess(tmp_path, "um", color_bundle, use_detections=True, detection_cache=2,
                       diagnostics_period=0.2, qos_depth=5)  # the 3 frames below all delivered
    client = Client(tester, "um")
    try:
        client.wait(lambda: client.camera.get_subscription_count() and
                    client.detector.get_subscription_count(), "the node's subscriptions", node)
        small = street(160, 120)
        probe = image_msg(small, stamp=(1, 0), frame_id="probe")  # both directions connected
        client.camera.publish(probe)
        client.detector.publish(boxes(probe.header, []))
        client.wait(lambda: client.by_frame("json", "probe"), "the probe's answer", node)
        for second in (900, 901, 902):  # boxes without a frame: the cache keeps 2
            header = image_msg(small, stamp=(second, 0)).header
            client.detector.publish(boxes(header, [("a", (0, 0, 80, 120))]))
        for second in (800, 801, 802):  # frames without boxes
            client.camera.publish(image_msg(small, stamp=(second, 0), frame_id="lonely"))

        def counted():
            return any(v.get("unmatched_images") == "1" and v.get("unmatched_detections") == "1"
                       for _, v in client.diagnostics_values())
        client.wait(counted, "one unmatched frame and one unmatched array counted", node)
        assert any(status.level == b"\x01" and "without a partner" in status.message
                   for status, _ in client.diagnostics_values())
        # A frame whose boxes arrive with the same stamp is still classified.
        msg = image_msg(small, stamp=(901, 0), frame_id="late")
        client.camera.publish(msg)
        client.wait(lambda: client.by_frame("json", "late"), "the pair of stamp 901", node)
        assert not client.by_frame("json", "lonely")
    finally:
        assert node.stop(signal.SIGINT) == 0, node.output()


def test_a_best_effort_camera_is_named_and_sensor_data_qos_matches_it(tester, color_bundle, tmp_path):
    node = NodeProcess(tmp_path, "be", color_bundle)  # default qos: reliable
    client = Client(tester, "be", camera_qos=qos_profile_sensor_data)
    try:
        client.wait(lambda: "incompatible" in node.output(), "the node's warning", node)
        assert "qos:=sensor_data" in node.output()
        client.wait(lambda: any("incompatible QoS" in s.message for s, _ in client.diagnostics_values()),
                    "diagnostics naming it", node)
    finally:
        assert node.stop(signal.SIGINT) == 0, node.output()
    node = NodeProcess(tmp_path, "be2", color_bundle, qos="sensor_data")
    client = Client(tester, "be2", camera_qos=qos_profile_sensor_data)
    try:
        client.wait(lambda: client.camera.get_subscription_count(), "a match", node)
        # small frames: best effort delivers them (large ones may be lost: README, QoS)
        for attempt in range(50):
            client.camera.publish(image_msg(solid(GREEN), frame_id="small"))
            with client.cond:
                if client.cond.wait_for(lambda: client.by_frame("json", "small"), timeout=1.0):
                    break
        assert client.by_frame("json", "small")[0]["results"][0]["label"] == "car"
    finally:
        assert node.stop(signal.SIGINT) == 0, node.output()


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGINT, signal.SIGINT),
                                     (signal.SIGTERM, signal.SIGINT)], ids=["sigint", "sigint-twice",
                                                                             "sigterm-then-sigint"])
def test_signals_under_load_end_the_node_cleanly(tester, runtime_bundle, tmp_path, signals):
    name = f"sig{len(signals)}{signals[0]}"
    node = NodeProcess(tmp_path, name, runtime_bundle)
    client = Client(tester, name)
    frame = image_msg(street(), "bgr8", frame_id="load")
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            client.camera.publish(frame)
            time.sleep(0.002)
    try:
        client.wait(lambda: client.camera.get_subscription_count(), "the node's subscription", node)
        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        client.wait(lambda: len(client.by_frame("json", "load")) >= 3, "the node busy", node)
        code = node.stop(*signals, gap=0.02)
    finally:
        stop.set()
    output = node.output()
    assert code == 0, output
    for bad in ("Traceback", "KeyboardInterrupt", "frame processing failed", "RCLError",
                "Exception ignored"):
        assert bad not in output, output


def test_a_signal_while_the_node_starts_is_a_clean_stop(tmp_path, color_bundle):
    node = NodeProcess(tmp_path, "early", color_bundle)
    deadline = time.monotonic() + TIMEOUT
    while "listening on" not in node.output():  # topics made, not yet spinning
        assert node.process.poll() is None and time.monotonic() < deadline, node.output()
        time.sleep(0.005)
    assert node.stop(signal.SIGINT) == 0, node.output()
    for bad in ("Traceback", "KeyboardInterrupt", "Exception ignored"):
        assert bad not in node.output(), node.output()
