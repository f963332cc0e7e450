"""ROS 2 node: classify a camera's objects with an ADU bundle, reporting real road users and
suppressing illustrated ones (billboards, posters, cartoons, sketches).

    ros2 run adu_perception classifier_node --ros-args -p bundle:=/path/to/bundle \
        -p use_detections:=true -r image:=/camera/image_raw -r detections:=/detector/detections

Subscribes  image             sensor_msgs/Image            (or image/compressed when compressed:=true)
            detections        vision_msgs/Detection2DArray (use_detections:=true; paired with the
                                                            image of the same header stamp)
Publishes   ~/detections      vision_msgs/Detection2DArray the real objects: input bbox and id, our
                                                           top-k hypotheses (class_id = class name)
            ~/suppressed      vision_msgs/Detection2DArray the suppressed boxes, same fields
            ~/label_info      vision_msgs/LabelInfo        class map (transient local)
            ~/classification  std_msgs/String              JSON per frame (debug: every box's id,
                                                           decision and reason)
            ~/overlay         sensor_msgs/Image rgb8       (drawn only while someone subscribes)
            /diagnostics      diagnostic_msgs/DiagnosticArray
Without a detector, the boxes are the whole frame, the `regions` or the grid tiles.

Newest frame only: the subscription callbacks just store the latest frame (or frame + boxes
pair); a worker thread runs inference on it, all boxes of a frame in one batch. A frame that
is replaced before the worker takes it counts as dropped. No torch import.
"""
import json
import signal
import sys
import threading
import math
import re
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
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from adu_perception.runtime import images
from adu_perception.runtime.bundle import BundleError, load_bundle
from adu_perception.runtime.predictor import BACKENDS, BackendError, Predictor

from . import health, vision_io
from .pairing import StampPairer

NODE_NAME = "classifier_node"
QOS_CHOICES = ("reliable", "sensor_data")
LATENCY_WINDOW = 1000  # latest latencies kept for the percentiles
# Reasons for a box the model never saw (the decision rule's reasons are runtime.decision's)
OUTSIDE_FRAME = "outside_frame"  # the box does not overlap the frame
INVALID_BOX = "invalid_box"      # no area, or non-finite or absurd coordinates
INVALID_FRAME = "invalid_frame"  # the image itself could not be read (the log says why)
TOO_SMALL = "too_small"          # under images.MIN_CROP_SIDE pixels on a side inside the frame


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
    ParamSpec("use_detections", T.BOOL, False, "classify the boxes of a detector: subscribe to "
              "vision_msgs/Detection2DArray on detections and pair each array with the image of "
              "the same header stamp", read_only=True),
    ParamSpec("detection_cache", T.INTEGER, 10, "frames and detection arrays kept while waiting "
              "for their partner of the same stamp; older ones count as unmatched",
              read_only=True, range=(1, 1000)),
    ParamSpec("context_margin", T.DOUBLE, 0.0, "grow each detection box and region by this "
              "fraction of its width and height on every side before cropping (clipped to the "
              "frame), so the model sees its surroundings", range=(0.0, 1.0)),
    ParamSpec("compressed", T.BOOL, False, "subscribe to sensor_msgs/CompressedImage on "
              "image/compressed instead of sensor_msgs/Image on image", read_only=True),
    ParamSpec("qos", T.STRING, "reliable", "input QoS: reliable (matches reliable publishers, "
              "delivers full frames between processes) or sensor_data (best effort: matches "
              "every publisher, may lose large frames)", read_only=True),
    ParamSpec("qos_depth", T.INTEGER, 2, "input queue depth (the node keeps only the newest frame)",
              read_only=True, range=(1, 100)),
    ParamSpec("confidence_threshold", T.DOUBLE, None, "suppress when max class probability is "
              "below this (default: the bundle's thresholds.confidence)", range=(0.0, 1.0)),
    ParamSpec("forgotten_domain_threshold", T.DOUBLE, None, "suppress when the summed probability "
              "of forgotten domains reaches this (default: the bundle's "
              "thresholds.forgotten_domain)", range=(0.0, 1.0)),
    ParamSpec("min_real_similarity", T.DOUBLE, None, "suppress as unfamiliar when the similarity "
              "to the bundle's memorised-domain bank is below this (default: the bundle's "
              "thresholds.min_real_similarity; -1 turns the rule off; bundles without a bank: "
              "off)", range=(-1.0, 1.0)),
    ParamSpec("top_k", T.INTEGER, 3, "hypotheses per box in the outputs", range=(1, 1000)),
    ParamSpec("regions", T.INTEGER_ARRAY, [], "regions of interest as a flat list x, y, width, "
              "height, ... in pixels; each is classified on its own (empty: whole frame); "
              "ignored with use_detections"),
    ParamSpec("grid_rows", T.INTEGER, 0, "split the frame into grid_rows x grid_cols tiles, each "
              "classified (0 or 1: no split); ignored while regions is set", range=(0, 32)),
    ParamSpec("grid_cols", T.INTEGER, 0, "see grid_rows", range=(0, 32)),
    ParamSpec("publish_overlay", T.BOOL, True, "draw results on ~/overlay (only while it has "
              "subscribers)"),
    ParamSpec("diagnostics_period", T.DOUBLE, 1.0, "seconds between /diagnostics messages",
              read_only=True, range=(0.1, 60.0)),
    ParamSpec("max_drop_ratio", T.DOUBLE, 0.5, "diagnostics WARN when more than this fraction "
              "of a period's frames is dropped (model busy) or lost in transport", range=(0.0, 1.0)),
    ParamSpec("min_rate_hz", T.DOUBLE, 0.0, "diagnostics WARN when frames arrive slower than "
              "this (0: off)", range=(0.0, 1000.0)),
    ParamSpec("log_throttle_sec", T.DOUBLE, 5.0, "at most one warning per this many seconds for "
              "each kind of bad frame (a new kind is named at once) and for bad boxes",
              read_only=True, range=(0.0, 3600.0)),
)
PARAMETER_NAMES = tuple(spec.name for spec in PARAMETERS)
DOUBLE_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if spec.type == T.DOUBLE)
COUNTERS = ("received", "processed", "dropped", "invalid", "errors", "lost", "incompatible_qos",
            "unmatched_images", "unmatched_detections", "boxes", "boxes_unclassified")


@dataclass(frozen=True)
class Settings:
    """The run-time adjustable parameters, swapped whole so the worker sees a consistent set."""
    confidence: float
    forgotten_domain: float
    min_real_similarity: Optional[float]  # None: the bundle has no bank (rule off)
    top_k: int
    regions: tuple
    grid: Tuple[int, int]
    margin: float
    overlay: bool
    limits: health.Limits


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


def _as_double(parameter: Parameter) -> Parameter:
    """An integer given for a double parameter (`-p confidence_threshold:=1`, `1` in YAML)
    becomes that double; anything else is left for rclpy's type check."""
    if parameter.name in DOUBLE_PARAMETERS and parameter.type_ == T.INTEGER:
        return Parameter(parameter.name, T.DOUBLE, float(parameter.value))
    return parameter


def _unseen_reason(region, width: int, height: int) -> Optional[str]:
    """Why a box is not given to the model (None: it is)."""
    if region is None:
        return INVALID_BOX
    if not images.inside(region, width, height):
        return OUTSIDE_FRAME
    if images.too_small(region, width, height):
        return TOO_SMALL
    return None


def _bbox_text(bbox) -> str:
    return (f"centre ({bbox.center.position.x}, {bbox.center.position.y}), size "
            f"({bbox.size_x}, {bbox.size_y})")


def _stamp(header) -> Tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


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
        self._frame_size = None  # (width, height) of the latest frame, to check new regions
        self._declare_parameters()
        self._load_model()
        self._declare_threshold_parameters()
        checked = self._validate_parameters([self.get_parameter(n) for n in PARAMETER_NAMES])
        if not checked.successful:
            raise ConfigError(checked.reason)
        self.add_pre_set_parameters_callback(lambda parameters: [_as_double(p) for p in parameters])
        self.add_on_set_parameters_callback(self._validate_change)
        self.add_post_set_parameters_callback(lambda _: self._apply_settings())
        self._apply_settings()
        self._throttle = float(self._value("log_throttle_sec"))
        self._last_warned = {}  # bad-frame problem -> monotonic time of its last warning

        # Counters and the newest pending frame, shared with the worker thread.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = None  # (image, detections or None, monotonic receive time)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._latencies = deque(maxlen=LATENCY_WINDOW)        # seconds, receive -> publish
        self._stamp_latencies = deque(maxlen=LATENCY_WINDOW)  # seconds, header stamp -> publish
        self._last_report = (time.monotonic(), dict(self._counts))
        self._pairer = (StampPairer(int(self._value("detection_cache")))
                        if self._value("use_detections") else None)

        self._create_topics()
        self._diag_timer = self.create_timer(float(self._value("diagnostics_period")),
                                             self._publish_diagnostics)
        self.context.on_shutdown(self._on_shutdown)
        self._worker = threading.Thread(target=self._work, name="classifier_worker", daemon=True)
        self._worker.start()

    def _declare_parameters(self):
        for spec in PARAMETERS:
            if spec.default is None:
                continue  # declared once the bundle is loaded (its manifest gives the default)
            self._accept_integer_override(spec.name)
            value = None if spec.type == T.INTEGER_ARRAY else spec.default  # see _descriptor
            self.declare_parameter(spec.name, value, _descriptor(spec))

    def _accept_integer_override(self, name: str):
        """Start-up values (command line, YAML) bypass the pre-set callback: convert here."""
        if name in DOUBLE_PARAMETERS and name in self._parameter_overrides:
            self._parameter_overrides[name] = _as_double(self._parameter_overrides[name])

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
        if value("use_detections") and not vision_io.AVAILABLE:
            raise ConfigError(f"use_detections:=true needs vision_msgs: {vision_io.MISSING}")
        self.bundle = load_bundle(value("bundle"))
        self.predictor = Predictor(self.bundle, backend=value("backend"),
                                   threads=value("inference_threads"))
        self.get_logger().info(f"bundle {self.bundle.path} ({len(self.bundle.class_names)} classes, "
                               f"forgets {', '.join(self.bundle.forgotten_domains) or 'nothing'}); "
                               f"backend {self.predictor.backend} ({self.predictor.detail})")
        open_set = self.bundle.open_set
        if open_set is None:
            self.get_logger().info(f"note: {self.bundle.notes}")
        else:
            self.get_logger().info(f"open-set rule on: {open_set.score}, k {open_set.k} over "
                                   f"{open_set.n_bank} memorised-domain embeddings; 'unfamiliar' "
                                   f"below {self.bundle.min_real_similarity_threshold:.4f}")
        if self.bundle.texture is not None:
            self.get_logger().info(f"texture rule on: crops also read at {self.bundle.texture.input_size} px; "
                                   f"'illustrated_texture' at p_texture >= forgotten_domain_threshold")

    def _declare_threshold_parameters(self):
        real = self.bundle.min_real_similarity_threshold
        defaults = {"confidence_threshold": self.bundle.confidence_threshold,
                    "forgotten_domain_threshold": self.bundle.forgotten_domain_threshold,
                    "min_real_similarity": -1.0 if real is None else real}
        for spec in PARAMETERS:
            if spec.default is None:
                self._accept_integer_override(spec.name)
                self.declare_parameter(spec.name, float(defaults[spec.name]), _descriptor(spec))

    def _create_topics(self):
        self._result_pub = self.create_publisher(String, "~/classification", 10)
        self._vision_pubs = None
        if vision_io.AVAILABLE:
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=ReliabilityPolicy.RELIABLE)
            self._vision_pubs = {
                "reported": self.create_publisher(vision_io.Detection2DArray, "~/detections", 10),
                "suppressed": self.create_publisher(vision_io.Detection2DArray, "~/suppressed", 10),
                "label_info": self.create_publisher(vision_io.LabelInfo, "~/label_info", latched)}
            self._publish_label_info()
        else:
            self.get_logger().warning(f"{vision_io.MISSING}: ~/detections, ~/suppressed and "
                                      "~/label_info are off; results only on ~/classification (JSON)")
        # Reliable depth 1: matches both reliable and best-effort viewers, never queues.
        self._overlay_pub = self.create_publisher(Image, "~/overlay", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._compressed = bool(self._value("compressed"))
        message_type, topic = ((CompressedImage, "image/compressed") if self._compressed
                               else (Image, "image"))
        qos = self._input_qos(self._value("qos_depth"))
        self._sub = self.create_subscription(message_type, topic, self._on_image, qos,
                                             event_callbacks=self._input_events(topic))
        inputs = f"{self._sub.topic_name} ({message_type.__name__})"
        self._detections_sub = None
        if self._pairer is not None:
            # Small messages: keep as many as the pairing cache holds, so bursts are not lost.
            depth = max(int(self._value("qos_depth")), int(self._value("detection_cache")))
            self._detections_sub = self.create_subscription(
                vision_io.Detection2DArray, "detections", self._on_detections,
                self._input_qos(depth),
                event_callbacks=self._input_events("detections"))
            inputs += f" + {self._detections_sub.topic_name} (Detection2DArray, paired by stamp)"
        self.get_logger().info(f"listening on {inputs}, qos {self._value('qos')}; publishing "
                               f"{self._result_pub.topic_name}")

    def _input_events(self, topic: str) -> SubscriptionEventCallbacks:
        """Count frames the middleware saw lost, and say so when a publisher cannot match."""
        def lost(info):
            self._count("lost", info.total_count_change)

        def incompatible(info):
            self._count("incompatible_qos", info.total_count_change)
            self.get_logger().warning(
                f"a publisher on {topic} offers QoS incompatible with this node's qos="
                f"{self._value('qos')} (policy {info.last_policy_kind}); a best-effort camera needs "
                f"qos:=sensor_data")
        return SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)

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

    def _publish_label_info(self):
        if self._vision_pubs is not None:
            header = Header()
            header.stamp = self.get_clock().now().to_msg()
            self._vision_pubs["label_info"].publish(vision_io.label_info(
                header, self.bundle.class_names, self.settings.confidence))

    # -- parameters at run time -------------------------------------------------------------
    def _validate_change(self, parameters) -> SetParametersResult:
        """A change at run time: _validate_parameters, and regions may not be deleted (rclpy
        would undeclare it, being dynamically typed, and no later change could be applied)."""
        if any(p.name == "regions" and p.type_ == T.NOT_SET for p in parameters):
            return SetParametersResult(successful=False, reason="regions cannot be deleted or "
                                       "unset; set it to [] for no regions")
        return self._validate_parameters(parameters)

    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Checks the descriptor ranges cannot express (types and ranges rclpy checks itself)."""
        for parameter in parameters:
            if parameter.name != "regions" or not parameter.value:
                continue  # unset or any empty array: no regions
            if parameter.type_ != T.INTEGER_ARRAY:
                return SetParametersResult(successful=False, reason="regions must be an integer "
                                           f"array x, y, width, height, ...; got {parameter.value!r}")
            try:
                regions = images.regions_from_flat(parameter.value)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=f"regions: {error}")
            if self._frame_size is not None:
                width, height = self._frame_size
                outside = [r for r in regions if not images.inside(r, width, height)]
                if outside:
                    return SetParametersResult(successful=False, reason=(
                        f"regions {outside} lie outside the camera's {width}x{height} frames"))
        return SetParametersResult(successful=True)

    def _apply_settings(self):
        value = self._value
        previous = getattr(self, "settings", None)
        self.settings = Settings(
            confidence=float(value("confidence_threshold")),
            forgotten_domain=float(value("forgotten_domain_threshold")),
            min_real_similarity=(None if self.bundle.open_set is None
                                 else float(value("min_real_similarity"))),
            top_k=int(value("top_k")),
            regions=tuple(images.regions_from_flat(value("regions"))),
            grid=(max(1, int(value("grid_rows"))), max(1, int(value("grid_cols")))),
            margin=float(value("context_margin")),
            overlay=bool(value("publish_overlay")),
            limits=health.Limits(max_drop_ratio=float(value("max_drop_ratio")),
                                 min_rate_hz=float(value("min_rate_hz"))))
        if previous is not None and previous.confidence != self.settings.confidence:
            self._publish_label_info()
        real = self.settings.min_real_similarity
        self.get_logger().info(f"thresholds: confidence {self.settings.confidence:.3f}, forgotten "
                               f"domain {self.settings.forgotten_domain:.3f}, min real similarity "
                               f"{'off' if real is None else format(real, '.4f')}; regions "
                               f"{len(self.settings.regions) or 'none'}; grid "
                               f"{self.settings.grid[0]}x{self.settings.grid[1]}; context margin "
                               f"{self.settings.margin:g}")

    # -- frames -------------------------------------------------------------------------------
    def _count(self, name: str, amount: int = 1):
        with self._lock:
            self._counts[name] += amount

    def _queue(self, image, detections, received: float):
        """Newest only: a pending frame not yet taken by the worker is dropped."""
        with self._lock:
            if self._pending is not None:
                self._counts["dropped"] += 1
            self._pending = (image, detections, received)
        self._wake.set()

    def _on_image(self, msg):
        """Executor thread: queue the frame (or wait for its boxes); the worker does the rest."""
        received = time.monotonic()
        self._count("received")
        if self._pairer is None:
            self._queue(msg, None, received)
        else:
            pair = self._pairer.add_image(_stamp(msg.header), (msg, received))
            if pair is not None:
                (image, received), detections = pair
                self._queue(image, detections, received)

    def _on_detections(self, msg):
        pair = self._pairer.add_detections(_stamp(msg.header), msg)
        if pair is not None:
            (image, received), detections = pair
            self._queue(image, detections, received)

    def _work(self):
        while not self._stop_event.is_set():
            if not self._wake.wait(timeout=0.1):
                continue
            with self._lock:
                self._wake.clear()
                item, self._pending = self._pending, None
            if item is None or self._stop_event.is_set():
                continue
            try:
                self._process(*item)
            except Exception as error:  # a failing backend or publisher must not stop the node
                if self._stop_event.is_set() or not self.context.ok():
                    return  # shutting down: the publishers are gone, nothing to report
                self._count("errors")
                self.get_logger().error(f"frame processing failed: {error!r}",
                                        throttle_duration_sec=self._throttle)

    def _warn_per_problem(self, problem: str, text: str):
        """A bad-frame warning, throttled per problem: a new kind of problem (another
        encoding, another size) is named at once, a repeated one at most every log_throttle_sec."""
        now = time.monotonic()
        if now - self._last_warned.get(problem, -math.inf) >= self._throttle:
            if len(self._last_warned) > 256:  # bounded, should names vary without end
                self._last_warned = {k: t for k, t in self._last_warned.items()
                                     if now - t < self._throttle}
            self._last_warned[problem] = now
            self.get_logger().warning(text)

    def _boxes(self, settings: Settings, detections, width: int, height: int, frame_id: str):
        """The boxes to classify in this frame (image frame_id), and the context margin they get."""
        if detections is not None:
            if detections.header.frame_id and detections.header.frame_id != frame_id:
                self.get_logger().warning(
                    f"detections in frame '{detections.header.frame_id}' paired by stamp with an image "
                    f"in frame '{frame_id}': the boxes are used in the image's pixels",
                    throttle_duration_sec=self._throttle)
            if any(d.bbox.center.theta for d in detections.detections):
                self.get_logger().warning("rotated boxes (bbox.center.theta != 0): the angle is ignored, "
                                          "each box is cropped upright", throttle_duration_sec=self._throttle)
            return vision_io.boxes_from_detections(detections), settings.margin
        if settings.regions:
            return vision_io.boxes_from_regions(settings.regions), settings.margin
        if settings.grid != (1, 1):
            return vision_io.boxes_from_regions(images.grid_regions(width, height, *settings.grid)), 0.0
        return vision_io.boxes_from_regions([(0, 0, width, height)]), 0.0

    def _process(self, msg, detections, received: float):
        settings = self.settings
        try:
            rgb = images.compressed_msg_to_rgb(msg) if self._compressed else images.image_msg_to_rgb(msg)
            height, width = rgb.shape[:2]
            boxes, margin = self._boxes(settings, detections, width, height, msg.header.frame_id)
        except images.ImageFormatError as error:
            self._count("invalid")
            # the kind of problem, not its numbers (a corrupt JPEG of each size is one problem)
            self._warn_per_problem(re.sub(r"\d+", "#", str(error)),
                                   f"skipping frame from '{msg.header.frame_id}': {error}")
            # a detector's boxes still get one answer each (suppressed), so a consumer waiting
            # on this stamp hears back; the JSON says why
            boxes = vision_io.boxes_from_detections(detections) if detections is not None else []
            self._publish(msg, None, None, boxes, [self._unseen(box, INVALID_FRAME) for box in boxes],
                          received, error=str(error))
            with self._lock:
                self._counts["boxes"] += len(boxes)
                self._counts["boxes_unclassified"] += len(boxes)
            return
        self._frame_size = (width, height)
        reasons = {i: _unseen_reason(box.region, width, height) for i, box in enumerate(boxes)}
        valid = [i for i, reason in reasons.items() if reason is None]
        if len(valid) < len(boxes):
            index = next(i for i, reason in reasons.items() if reason is not None)
            first = boxes[index]
            self.get_logger().warning(
                f"{len(boxes) - len(valid)} boxes of the {width}x{height} frame from "
                f"'{msg.header.frame_id}' not classified (first: id {first.id}, "
                f"{first.region or _bbox_text(first.bbox)}: {reasons[index]}); reported as "
                f"suppressed with that reason", throttle_duration_sec=self._throttle)
        decisions = {}
        if valid:
            crops = images.crop_regions(rgb, [boxes[i].region for i in valid], margin)
            found = self.predictor.classify_crops([crop for _, crop in crops], settings.confidence,
                                                  settings.forgotten_domain, settings.top_k,
                                                  regions=[r for r, _ in crops],
                                                  min_real_similarity=settings.min_real_similarity)
            decisions = dict(zip(valid, found))
        if self._stop_event.is_set():
            return  # shutting down while the model ran: the outputs may be gone
        results = [self._unseen(box, reasons[i]) if i not in decisions
                   else {"id": box.id, **decisions[i].to_dict()} for i, box in enumerate(boxes)]
        self._publish(msg, width, height, boxes, results, received)
        if settings.overlay and self._overlay_pub.get_subscription_count() > 0:
            self._overlay_pub.publish(self._overlay(msg, rgb, list(decisions.values())))
        with self._lock:
            self._counts["processed"] += 1
            self._counts["boxes"] += len(boxes)
            self._counts["boxes_unclassified"] += len(boxes) - len(valid)

    @staticmethod
    def _unseen(box, reason: str) -> dict:
        """The JSON entry of a box the model did not see, and why (region null: invalid box)."""
        return {"id": box.id, "reported": False, "suppressed": True, "reason": reason,
                "label": None, "score": 0.0, "domain": None, "domain_score": 0.0,
                "p_forgotten": 0.0, "real_similarity": None, "p_texture": None, "top_k": [],
                "region": None if box.region is None else list(box.region)}

    def _publish(self, msg, width, height, boxes, results, received: float, error: Optional[str] = None):
        latency = time.monotonic() - received
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        stamp_latency = (now_ns - stamp_ns) / 1e9 if stamp_ns else None
        self._result_pub.publish(String(data=json.dumps({
            "stamp": {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec},
            "frame_id": msg.header.frame_id,
            "width": width, "height": height,
            "backend": self.predictor.backend,
            "latency_ms": round(latency * 1000, 3),
            "stamp_latency_ms": None if stamp_latency is None else round(stamp_latency * 1000, 3),
            **({} if error is None else {"error": error}),
            "results": results})))
        if self._vision_pubs is not None:
            out = {"reported": [], "suppressed": []}
            for box, result in zip(boxes, results):
                out["reported" if result["reported"] else "suppressed"].append(
                    vision_io.detection(msg.header, box, result["top_k"]))
            for kind, detections in out.items():
                self._vision_pubs[kind].publish(vision_io.detection_array(msg.header, detections))
        if error is not None:
            return  # not a model run: kept out of the latency statistics
        with self._lock:
            self._latencies.append(time.monotonic() - received)
            if stamp_latency is not None:
                self._stamp_latencies.append(stamp_latency)

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
        """Counters and latency percentiles (ms) over the latest LATENCY_WINDOW frames:
        latency_* from reception, stamp_latency_* from the image's header stamp."""
        with self._lock:
            counts = dict(self._counts)
            series = {"latency": np.array(self._latencies) * 1000,
                      "stamp_latency": np.array(self._stamp_latencies) * 1000}
        if self._pairer is not None:
            counts["unmatched_images"] = self._pairer.unmatched["image"]
            counts["unmatched_detections"] = self._pairer.unmatched["detections"]
        out = dict(counts)
        for name, values in series.items():
            percentiles = (np.percentile(values, [50, 95, 99]) if len(values)
                           else [float("nan")] * 3)
            out.update({f"{name}_p{p}_ms": float(v) for p, v in zip((50, 95, 99), percentiles)})
        return out

    def _publish_diagnostics(self):
        now = time.monotonic()
        stats = self.stats()
        since, before = self._last_report
        self._last_report = (now, {k: stats[k] for k in COUNTERS})
        delta = {k: stats[k] - before[k] for k in COUNTERS}
        seconds = max(now - since, 1e-6)
        level, message = health.assess(delta, seconds, self.settings.limits, self._sub.topic_name)
        values = {"backend": self.predictor.backend, "bundle": str(self.bundle.path),
                  "receive_rate_hz": f"{delta['received'] / seconds:.2f}",
                  "processing_rate_hz": f"{delta['processed'] / seconds:.2f}",
                  "drop_ratio": f"{health.drop_ratio(delta):.3f}",
                  **{f"frames_{k}": str(stats[k]) for k in ("received", "processed", "dropped",
                                                            "invalid", "lost")},
                  "inference_errors": str(stats["errors"]),
                  "incompatible_publishers": str(stats["incompatible_qos"]),
                  "boxes_classified": str(stats["boxes"] - stats["boxes_unclassified"]),
                  "boxes_not_classified": str(stats["boxes_unclassified"]),
                  "unmatched_images": str(stats["unmatched_images"]),
                  "unmatched_detections": str(stats["unmatched_detections"]),
                  # still waiting for their partner (counted as unmatched only once evicted)
                  **{f"waiting_{side}": str(count) for side, count in
                     (self._pairer.waiting() if self._pairer else {"images": 0, "detections": 0}).items()},
                  **{f"{s}_{p}_ms": f"{stats[f'{s}_{p}_ms']:.2f}"
                     for s in ("latency", "stamp_latency") for p in ("p50", "p95", "p99")},
                  "vision_msgs_outputs": "on" if self._vision_pubs is not None else "off"}
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_fully_qualified_name()}: classification",
                                  message=message, hardware_id=self.predictor.backend,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # -- shutdown -----------------------------------------------------------------------------
    def _on_shutdown(self):
        """The context is going down (a signal, or rclpy.shutdown): the worker stops at once."""
        if getattr(self, "_stop_event", None) is not None:
            self._stop_event.set()

    def _stop_worker(self):
        self._on_shutdown()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            # A batch in flight finishes on its own (daemon thread) and publishes nothing.
            worker.join(timeout=2.0)

    def destroy_node(self):
        self._stop_worker()
        return super().destroy_node()


def _ignore_further_signals():
    """Cleanup after the first SIGINT/SIGTERM must not be cut short by a second one (no
    KeyboardInterrupt traceback, exit status 0)."""
    rclpy.signals.uninstall_signal_handlers()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


def main(args=None) -> int:
    # rclpy's own handlers stop the node on SIGINT / SIGTERM and then call the handler that was
    # there before. Python's would raise KeyboardInterrupt wherever the main thread is (inside
    # a message conversion, say), turning a clean stop into a traceback: record it instead.
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        rclpy.init(args=args)
    except Exception as error:  # rcl cannot parse the arguments, e.g. a malformed --params-file
        detail = " ".join(str(error).split())
        print(f"[FATAL] [{NODE_NAME}]: cannot start: {detail}", file=sys.stderr)
        return 1
    if interrupted:  # before rclpy's handlers were in place
        rclpy.try_shutdown()
        return 0
    # Made before the node, so that a signal while the node starts ends spin() cleanly.
    executor = SingleThreadedExecutor()
    node, status = None, 0
    try:
        node = ClassifierNode()
        executor.add_node(node)
        executor.spin()
    except (BundleError, BackendError, ConfigError, ParameterException) as error:
        # One clear line, no traceback: the usual cause is a wrong path, backend or value.
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        status = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM, also while starting: a normal stop
    except Exception:
        if rclpy.ok():
            raise
        # a signal shut the context down while the node was being built
    finally:
        _ignore_further_signals()
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
