"""Drive the generated road scene through the real ROS 2 classifier node (rclpy), as in a
vehicle: a stand-in camera publishes each full frame (sensor_msgs/Image) and a stand-in
detector its boxes (vision_msgs/Detection2DArray, same header, one detection per object, id =
the object's index). The node classifies every box and answers on ~/detections (real road
users) and ~/suppressed (the rest); we count from those two and score them against the
generator's ground truth (real road user -> reported, billboard -> suppressed). The reason of
each suppression comes from the node's JSON debug channel (~/classification).
"""
import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

RESULT_TIMEOUT_S = 10.0  # per frame; the tiny model answers in milliseconds


def _image_msg(rgb: np.ndarray, frame_id: str, stamp_ns: int):
    from sensor_msgs.msg import Image

    from adu_perception.runtime.images import rgb_to_image_fields

    msg = Image(**rgb_to_image_fields(rgb))
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def _detections_msg(header, objects):
    """What a 2D detector publishes for this frame: one box per object, same header."""
    from adu_perception.ros_node import vision_io

    return vision_io.detection_array(header, [
        vision_io.Detection2D(header=header, id=str(i), bbox=vision_io.bbox_of(obj["box"]))
        for i, obj in enumerate(objects)])


def run_drive_through_node(bundle, frames: Sequence, backend: str = "onnxruntime-cpu",
                           progress: bool = True, context_margin: Optional[float] = None) -> List[Dict]:
    """Classify every object of `frames` (render_drive's output) with the real node.

    Returns one record per object: frame index, box, the generator's true class and domain,
    whether the node reported it (on ~/detections) or suppressed it (on ~/suppressed), its
    label (the top hypothesis when reported) and the JSON decision for that box id.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from tqdm import tqdm

    from adu_perception.ros_node import vision_io
    from adu_perception.ros_node.classifier_node import ClassifierNode

    if not vision_io.AVAILABLE:
        raise RuntimeError(f"the drive needs vision_msgs: {vision_io.MISSING}")
    # Our own ROS domain on this host: no cross-talk with other graphs on the machine.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    records, answers = [], {"reported": {}, "suppressed": {}, "json": {}}
    try:
        # Reliable QoS (the node's default) both ways: the demo waits for every answer.
        overrides = [Parameter("bundle", value=str(bundle)), Parameter("backend", value=backend),
                     Parameter("use_detections", value=True), Parameter("publish_overlay", value=False)]
        if context_margin is not None:  # else the node's own default
            overrides.append(Parameter("context_margin", value=float(context_margin)))
        node = ClassifierNode(context=context, parameter_overrides=overrides)
        sensors = rclpy.create_node("demo_camera", context=context)
        camera = sensors.create_publisher(Image, "image", 10)
        detector = sensors.create_publisher(vision_io.Detection2DArray, "detections", 10)
        base = f"/{node.get_name()}"
        for kind in ("reported", "suppressed"):
            sensors.create_subscription(
                vision_io.Detection2DArray, f"{base}/{'detections' if kind == 'reported' else kind}",
                lambda msg, kind=kind: answers[kind].__setitem__(msg.header.frame_id, msg), 10)
        sensors.create_subscription(String, f"{base}/classification",
                                    lambda msg: _store(answers["json"], msg.data), 10)
        executor.add_node(node)
        executor.add_node(sensors)
        _wait_for(executor, lambda: camera.get_subscription_count() > 0 and
                  detector.get_subscription_count() > 0, "the node's subscriptions")

        for t in tqdm(range(len(frames)), desc="drive: node classifies each frame's boxes",
                      disable=not progress, unit="frame"):
            rgb, objects = frames[t]
            frame_id = f"drive/frame_{t:04d}"
            image = _image_msg(rgb, frame_id, time.time_ns())
            camera.publish(image)
            detector.publish(_detections_msg(image.header, objects))
            _wait_for(executor, lambda: all(frame_id in answers[k] for k in answers),
                      f"the node's answers for {frame_id}")
            records += _frame_records(t, objects, *(answers[k].pop(frame_id) for k in
                                                    ("reported", "suppressed", "json")))
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    return records


def _frame_records(t: int, objects, reported, suppressed, debug) -> List[Dict]:
    """One record per object, from the two Detection2DArray outputs (+ the JSON's reasons)."""
    out = {d.id: (True, d) for d in reported.detections}
    out.update({d.id: (False, d) for d in suppressed.detections})
    decisions = {item["id"]: item for item in debug["results"]}
    records = []
    for i, obj in enumerate(objects):
        was_reported, detection = out[str(i)]
        decision = decisions[str(i)]
        if was_reported != decision["reported"]:
            raise RuntimeError(f"frame {t}, box {i}: ~/detections and ~/classification disagree")
        label = detection.results[0].hypothesis.class_id if was_reported else None
        records.append({"frame": t, "box": [int(v) for v in obj["box"]], "true_class": obj["class"],
                        "true_domain": obj["domain"], **decision, "reported": was_reported,
                        "label": label})
    return records


def _store(answers: dict, data: str) -> None:
    message = json.loads(data)
    answers[message["frame_id"]] = message


def _wait_for(executor, condition, what: str) -> None:
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {RESULT_TIMEOUT_S:.0f} s waiting for {what}")
        executor.spin_once(timeout_sec=0.05)


# The demo's goals for the drive (issue 9): what a user of the node should see.
GOALS = (("billboard road users suppressed", "illustrated_suppressed", "illustrated", 0.90),
         ("real road users reported", "real_reported", "real", 0.90),
         ("reported real road users with the right class", "real_reported_correct", "real_reported", 0.75))


def summarise_drive(records: List[Dict], memorized: Sequence[str]) -> Dict:
    """Counts the report needs: real objects reported (and correctly), billboards suppressed,
    and the drive's goals (rate, target, met) computed from them."""
    real = [r for r in records if r["true_domain"] in memorized]
    illustrated = [r for r in records if r["true_domain"] not in memorized]
    summary = {
        "objects": len(records),
        "real": len(real),
        "real_reported": sum(r["reported"] for r in real),
        "real_reported_correct": sum(r["reported"] and r["label"] == r["true_class"] for r in real),
        "illustrated": len(illustrated),
        "illustrated_suppressed": sum(not r["reported"] for r in illustrated),
        "illustrated_suppressed_as_forgotten": sum(r["reason"] == "forgotten_domain"
                                                   for r in illustrated),
        "illustrated_suppressed_as_unfamiliar": sum(r["reason"] == "unfamiliar" for r in illustrated),
        "real_suppressed_by_reason": {reason: sum(r["reason"] == reason for r in real)
                                      for reason in sorted({r["reason"] for r in real} - {"reported"})},
    }
    summary["goals"] = []
    for name, count, of, target in GOALS:
        rate = summary[count] / summary[of] if summary[of] else 0.0
        summary["goals"].append({"name": name, "count": summary[count], "of": summary[of],
                                 "rate": round(rate, 4), "target": target, "met": rate >= target})
    return summary


def draw_frame(frame: np.ndarray, records: List[Dict], path) -> None:
    """Save the frame with every region: green = reported label, red = suppressed."""
    canvas = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    for r in records:
        x, y, w, h = r["box"]
        colour = (60, 200, 60) if r["reported"] else (40, 40, 230)
        text = r["label"] if r["reported"] else f"suppressed ({r['reason'].replace('_', ' ')})"
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
        cv2.putText(canvas, text, (x + 2, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1,
                    cv2.LINE_AA)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")
