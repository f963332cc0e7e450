"""ROS 2 node: classify camera frames with an ADU bundle, reporting real objects and
suppressing illustrated ones (billboards, posters, cartoons, sketches).

    ros2 run adu_perception classifier_node --ros-args -p bundle:=/path/to/bundle \
        -r image:=/camera/image_raw

Subscribes  image             sensor_msgs/Image            (or image/compressed when compressed:=true)
Publishes   ~/classification  std_msgs/String              JSON per frame (see _frame_json)
            ~/vision_classification  vision_msgs/Classification  (only if vision_msgs is installed)
            ~/overlay         sensor_msgs/Image rgb8       (drawn only while someone subscribes)
            /diagnostics      diagnostic_msgs/DiagnosticArray

Newest frame only: the subscription callback just stores the latest message; a worker
thread runs inference on it. A frame that is replaced before the worker takes it counts as
dropped, so latency stays bounded when the camera outpaces the model. No torch import.
"""
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from adu_perception.runtime import images
from adu_perception.runtime.bundle import BundleError, load_bundle
from adu_perception.runtime.predictor import BACKENDS, BackendError, Predictor

try:  # optional: not every ROS install (nor this PyPI one) has vision_msgs
    from vision_msgs.msg import Classification, ObjectHypothesis
except ImportError:
    Classification = ObjectHypothesis = None

NODE_NAME = "classifier_node"
QOS_CHOICES = ("sensor_data", "reliable")
LATENCY_WINDOW = 1000  # latest latencies kept for the percentiles


class ConfigError(ValueError):
    """A start-up parameter the node cannot work with."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: Parameter.Type
    default: object          # None: taken from the bundle's manifest
    description: str
    read_only: bool = False  # fixed at start (needs a restart to change)
    range: Optional[Tuple[float, float]] = None


T = Parameter.Type
# Every parameter the node declares (the README table and tests/test_launch.py read this).
PARAMETERS = (
    ParamSpec("bundle", T.STRING, "", "bundle folder (model.onnx + manifest.json) written by "
              "`adu export`", read_only=True),
    ParamSpec("backend", T.STRING, "auto", "inference backend: " + " | ".join(BACKENDS),
              read_only=True),
    ParamSpec("inference_threads", T.INTEGER, 0, "ONNX Runtime intra-op threads (0: its default)",
              read_only=True, range=(0, 256)),
    ParamSpec("compressed", T.BOOL, False, "subscribe to sensor_msgs/CompressedImage on "
              "image/compressed instead of sensor_msgs/Image on image", read_only=True),
    ParamSpec("qos", T.STRING, "sensor_data", "input QoS: sensor_data (best effort) or reliable",
              read_only=True),
    ParamSpec("qos_depth", T.INTEGER, 2, "input queue depth (the node keeps only the newest frame)",
              read_only=True, range=(1, 100)),
    ParamSpec("confidence_threshold", T.DOUBLE, None, "suppress when max class probability is "
              "below this (default: the bundle's thresholds.confidence)", range=(0.0, 1.0)),
    ParamSpec("forgotten_domain_threshold", T.DOUBLE, None, "suppress when the summed probability "
              "of forgotten domains reaches this (default: the bundle's "
              "thresholds.forgotten_domain)", range=(0.0, 1.0)),
    ParamSpec("top_k", T.INTEGER, 3, "classes listed per result in the JSON", range=(1, 1000)),
    ParamSpec("regions", T.INTEGER_ARRAY, [], "regions of interest as a flat list x, y, width, "
              "height, ... in pixels; each is classified on its own (empty: whole frame)"),
    ParamSpec("grid_rows", T.INTEGER, 0, "split the frame into grid_rows x grid_cols tiles, each "
              "classified (0 or 1: no split); ignored while regions is set", range=(0, 32)),
    ParamSpec("grid_cols", T.INTEGER, 0, "see grid_rows", range=(0, 32)),
    ParamSpec("publish_overlay", T.BOOL, True, "draw results on ~/overlay (only while it has "
              "subscribers)"),
    ParamSpec("diagnostics_period", T.DOUBLE, 1.0, "seconds between /diagnostics messages",
              read_only=True, range=(0.1, 60.0)),
    ParamSpec("log_throttle_sec", T.DOUBLE, 5.0, "at most one bad-frame warning per this many "
              "seconds", read_only=True, range=(0.0, 3600.0)),
)
PARAMETER_NAMES = tuple(spec.name for spec in PARAMETERS)


@dataclass(frozen=True)
class Settings:
    """The run-time adjustable parameters, swapped whole so the worker sees a consistent set."""
    confidence: float
    forgotten_domain: float
    top_k: int
    regions: tuple
    grid: Tuple[int, int]
    overlay: bool


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.type == T.INTEGER_ARRAY:
        # An empty list has no type of its own in ROS (`[]` arrives as a byte or string array):
        # accept any type here and check the value in _validate_parameters.
        descriptor.dynamic_typing = True
    if spec.range and spec.type == T.DOUBLE:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.range and spec.type == T.INTEGER:
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return descriptor


class ClassifierNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._start()
        except Exception:
            self._stop_worker()
            self.destroy_node()
            raise

    # -- start-up -------------------------------------------------------------------------
    def _start(self):
        self._stop_event = threading.Event()
        self._worker = None
        self._declare_parameters()
        self._load_model()
        self._declare_threshold_parameters()
        checked = self._validate_parameters([self.get_parameter(n) for n in PARAMETER_NAMES])
        if not checked.successful:
            raise ConfigError(checked.reason)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(lambda _: self._apply_settings())
        self._apply_settings()
        self._throttle = float(self._value("log_throttle_sec"))

        # Counters and the newest pending frame, shared with the worker thread.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = None  # (message, monotonic receive time)
        self._counts = dict(received=0, processed=0, dropped=0, invalid=0, errors=0)
        self._latencies = deque(maxlen=LATENCY_WINDOW)  # seconds, receive -> publish
        self._last_report = (time.monotonic(), dict(self._counts))

        self._create_topics()
        self._diag_timer = self.create_timer(float(self._value("diagnostics_period")),
                                             self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="classifier_worker", daemon=True)
        self._worker.start()

    def _declare_parameters(self):
        for spec in PARAMETERS:
            if spec.default is None:
                continue  # declared once the bundle is loaded (its manifest gives the default)
            value = None if spec.type == T.INTEGER_ARRAY else spec.default  # see _descriptor
            self.declare_parameter(spec.name, value, _descriptor(spec))

    def _load_model(self):
        value = self._value
        if not value("bundle"):
            raise BundleError("parameter 'bundle' is not set: run with "
                              "--ros-args -p bundle:=/path/to/bundle")
        if value("backend") not in BACKENDS:
            raise ConfigError(f"parameter backend={value('backend')!r}: choose one of "
                              f"{', '.join(BACKENDS)}")
        if value("qos") not in QOS_CHOICES:
            raise ConfigError(f"parameter qos={value('qos')!r}: choose one of {', '.join(QOS_CHOICES)}")
        self.bundle = load_bundle(value("bundle"))
        self.predictor = Predictor(self.bundle, backend=value("backend"),
                                   threads=value("inference_threads"))
        self.get_logger().info(f"bundle {self.bundle.path} ({len(self.bundle.class_names)} classes, "
                               f"forgets {', '.join(self.bundle.forgotten_domains) or 'nothing'}); "
                               f"backend {self.predictor.backend} ({self.predictor.detail})")

    def _declare_threshold_parameters(self):
        defaults = {"confidence_threshold": self.bundle.confidence_threshold,
                    "forgotten_domain_threshold": self.bundle.forgotten_domain_threshold}
        for spec in PARAMETERS:
            if spec.default is None:
                self.declare_parameter(spec.name, float(defaults[spec.name]), _descriptor(spec))

    def _create_topics(self):
        self._result_pub = self.create_publisher(String, "~/classification", 10)
        self._vision_pub = (self.create_publisher(Classification, "~/vision_classification", 10)
                            if Classification is not None else None)
        # Reliable depth 1: matches both reliable and best-effort viewers, never queues.
        self._overlay_pub = self.create_publisher(Image, "~/overlay", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._compressed = bool(self._value("compressed"))
        message_type, topic = ((CompressedImage, "image/compressed") if self._compressed
                               else (Image, "image"))
        self._sub = self.create_subscription(message_type, topic, self._on_image,
                                             self._input_qos(self._value("qos_depth")))
        self.get_logger().info(f"listening on {self._sub.topic_name} ({message_type.__name__}, "
                               f"qos {self._value('qos')}), publishing {self._result_pub.topic_name}")

    def _value(self, name: str):
        value = self.get_parameter(name).value
        return list(value or []) if name == "regions" else value

    def _input_qos(self, depth: int) -> QoSProfile:
        if self._value("qos") == "reliable":
            return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)

    # -- parameters at run time -------------------------------------------------------------
    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Checks the descriptor ranges cannot express (types and ranges rclpy checks itself)."""
        for parameter in parameters:
            if parameter.name != "regions" or not parameter.value:
                continue  # unset or any empty array: no regions
            if parameter.type_ != T.INTEGER_ARRAY:
                return SetParametersResult(successful=False, reason="regions must be an integer "
                                           f"array x, y, width, height, ...; got {parameter.value!r}")
            try:
                images.regions_from_flat(parameter.value)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=f"regions: {error}")
        return SetParametersResult(successful=True)

    def _apply_settings(self):
        value = self._value
        self.settings = Settings(
            confidence=float(value("confidence_threshold")),
            forgotten_domain=float(value("forgotten_domain_threshold")),
            top_k=int(value("top_k")),
            regions=tuple(images.regions_from_flat(value("regions"))),
            grid=(max(1, int(value("grid_rows"))), max(1, int(value("grid_cols")))),
            overlay=bool(value("publish_overlay")))
        self.get_logger().info(f"thresholds: confidence {self.settings.confidence:.3f}, forgotten "
                               f"domain {self.settings.forgotten_domain:.3f}; regions "
                               f"{len(self.settings.regions) or 'none'}; grid "
                               f"{self.settings.grid[0]}x{self.settings.grid[1]}")

    # -- frames -------------------------------------------------------------------------------
    def _on_image(self, msg):
        """Executor thread: keep only the newest frame; the worker does the rest."""
        received = time.monotonic()
        with self._lock:
            self._counts["received"] += 1
            if self._pending is not None:
                self._counts["dropped"] += 1
            self._pending = (msg, received)
        self._wake.set()

    def _work(self):
        while not self._stop_event.is_set():
            if not self._wake.wait(timeout=0.1):
                continue
            with self._lock:
                self._wake.clear()
                item, self._pending = self._pending, None
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as error:  # a failing backend or publisher must not stop the node
                with self._lock:
                    self._counts["errors"] += 1
                self.get_logger().error(f"frame processing failed: {error!r}",
                                        throttle_duration_sec=self._throttle)

    def _process(self, msg, received: float):
        settings = self.settings
        try:
            rgb = images.compressed_msg_to_rgb(msg) if self._compressed else images.image_msg_to_rgb(msg)
            height, width = rgb.shape[:2]
            regions = settings.regions or (images.grid_regions(width, height, *settings.grid)
                                           if settings.grid != (1, 1) else None)
            crops = images.crop_regions(rgb, regions)
            batch = images.preprocess([crop for _, crop in crops], self.bundle.input_size)
        except images.ImageFormatError as error:
            with self._lock:
                self._counts["invalid"] += 1
            self.get_logger().warning(f"skipping frame from '{msg.header.frame_id}': {error}",
                                      throttle_duration_sec=self._throttle)
            return
        decisions = self.predictor.classify(batch, settings.confidence, settings.forgotten_domain,
                                            settings.top_k, regions=[r for r, _ in crops])
        latency = time.monotonic() - received
        self._result_pub.publish(String(data=self._frame_json(msg, width, height, decisions, latency)))
        if self._vision_pub is not None:
            self._vision_pub.publish(Classification(header=msg.header, results=[
                ObjectHypothesis(class_id=d.label, score=d.score) for d in decisions if d.reported]))
        if settings.overlay and self._overlay_pub.get_subscription_count() > 0:
            self._overlay_pub.publish(self._overlay(msg, rgb, decisions))
        with self._lock:
            self._counts["processed"] += 1
            self._latencies.append(time.monotonic() - received)

    def _frame_json(self, msg, width, height, decisions, latency) -> str:
        return json.dumps({
            "stamp": {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec},
            "frame_id": msg.header.frame_id,
            "width": width, "height": height,
            "backend": self.predictor.backend,
            "latency_ms": round(latency * 1000, 3),
            "results": [d.to_dict() for d in decisions],
        })

    @staticmethod
    def _overlay(msg, rgb, decisions) -> Image:
        canvas = np.ascontiguousarray(rgb.copy())
        for d in decisions:
            x, y, w, h = d.region
            colour = (0, 200, 0) if d.reported else (220, 0, 0)
            text = (f"{d.label} {d.score:.2f}" if d.reported
                    else f"suppressed: {d.reason} ({d.domain})")
            cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, 2)
            cv2.putText(canvas, text, (x + 3, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                        cv2.LINE_AA)
        out = Image(**images.rgb_to_image_fields(canvas))
        out.header = msg.header
        return out

    # -- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters and latency percentiles (ms) over the latest LATENCY_WINDOW frames."""
        with self._lock:
            counts = dict(self._counts)
            latencies = np.array(self._latencies) * 1000
        percentiles = (np.percentile(latencies, [50, 95, 99]) if len(latencies)
                       else [float("nan")] * 3)
        return {**counts, "latency_p50_ms": float(percentiles[0]),
                "latency_p95_ms": float(percentiles[1]), "latency_p99_ms": float(percentiles[2])}

    def _publish_diagnostics(self):
        now = time.monotonic()
        stats = self.stats()
        since, before = self._last_report
        self._last_report = (now, {k: stats[k] for k in self._counts})
        delta = {k: stats[k] - before[k] for k in self._counts}
        rate = delta["processed"] / max(now - since, 1e-6)
        level, message = DiagnosticStatus.OK, f"{rate:.1f} frames/s"
        if delta["errors"]:
            level, message = DiagnosticStatus.ERROR, f"{delta['errors']} inference errors"
        elif delta["invalid"]:
            level, message = DiagnosticStatus.WARN, f"{delta['invalid']} invalid frames skipped"
        elif not delta["received"]:
            level, message = DiagnosticStatus.WARN, f"no frames on {self._sub.topic_name}"
        values = {"backend": self.predictor.backend, "bundle": str(self.bundle.path),
                  "processing_rate_hz": f"{rate:.2f}",
                  **{f"frames_{k}": str(stats[k]) for k in ("received", "processed", "dropped", "invalid")},
                  "inference_errors": str(stats["errors"]),
                  **{f"latency_{p}_ms": f"{stats[f'latency_{p}_ms']:.2f}" for p in ("p50", "p95", "p99")}}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: classification",
                                  message=message, hardware_id=self.predictor.backend,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # -- shutdown -----------------------------------------------------------------------------
    def _stop_worker(self):
        if getattr(self, "_stop_event", None) is not None:
            self._stop_event.set()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            worker.join(timeout=5.0)

    def destroy_node(self):
        self._stop_worker()
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = ClassifierNode()
    except (BundleError, BackendError, ConfigError) as error:
        # One clear line, no traceback: the usual cause is a wrong path or backend.
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
