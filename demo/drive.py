"""Drive the generated road scene through the real ROS 2 classifier node (rclpy).

A stand-in camera node cuts each object's region of interest out of a generated frame
(as a detector in front of the classifier would) and publishes it as a sensor_msgs/Image;
the node classifies it and publishes its JSON decision, which we collect and score against
the generator's ground truth (real road user -> reported, billboard -> suppressed).
"""
import json
import logging
import os
import time
from typing import Dict, List, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

RESULT_TIMEOUT_S = 10.0  # per crop; the tiny model answers in milliseconds


def _image_msg(rgb: np.ndarray, frame_id: str, stamp_ns: int):
    from sensor_msgs.msg import Image

    from adu_perception.runtime.images import rgb_to_image_fields

    msg = Image(**rgb_to_image_fields(rgb))
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def run_drive_through_node(bundle, frames: Sequence, backend: str = "onnxruntime-cpu",
                           progress: bool = True) -> List[Dict]:
    """Classify every object of `frames` (render_drive's output) with the real node.

    Returns one record per object: frame index, box, the generator's true class and domain,
    and the node's decision for that crop (its JSON result: label, reported, reason, ...).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from tqdm import tqdm

    from adu_perception.ros_node.classifier_node import ClassifierNode
    from adu_perception.runtime.images import crop_regions

    # Our own ROS domain on this host: no cross-talk with other graphs on the machine.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    records, answers = [], {}
    try:
        # Reliable QoS both ways: the demo waits for every answer, none may be lost.
        node = ClassifierNode(context=context, parameter_overrides=[
            Parameter("bundle", value=str(bundle)), Parameter("backend", value=backend),
            Parameter("qos", value="reliable")])
        camera = rclpy.create_node("demo_camera", context=context)
        publisher = camera.create_publisher(Image, "image", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE))
        camera.create_subscription(String, f"/{node.get_name()}/classification",
                                   lambda msg: _store(answers, msg.data), 10)
        executor.add_node(node)
        executor.add_node(camera)
        _wait_for(executor, lambda: publisher.get_subscription_count() > 0, "the node's subscription")

        jobs = [(t, i, obj) for t, (_, objects) in enumerate(frames) for i, obj in enumerate(objects)]
        for t, i, obj in tqdm(jobs, desc="drive: node classifies objects", disable=not progress,
                              unit="obj"):
            frame_id = f"drive/frame_{t:04d}/object_{i}"
            [(_, object_crop)] = crop_regions(frames[t][0], [obj["box"]])
            publisher.publish(_image_msg(object_crop, frame_id, time.time_ns()))
            _wait_for(executor, lambda: frame_id in answers, f"the node's answer for {frame_id}")
            result = answers.pop(frame_id)["results"][0]
            records.append({"frame": t, "box": [int(v) for v in obj["box"]],
                            "true_class": obj["class"], "true_domain": obj["domain"], **result})
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
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


def summarise_drive(records: List[Dict], memorized: Sequence[str]) -> Dict:
    """Counts the report needs: real objects reported (and correctly), billboards suppressed."""
    real = [r for r in records if r["true_domain"] in memorized]
    illustrated = [r for r in records if r["true_domain"] not in memorized]
    return {
        "objects": len(records),
        "real": len(real),
        "real_reported": sum(r["reported"] for r in real),
        "real_reported_correct": sum(r["reported"] and r["label"] == r["true_class"] for r in real),
        "illustrated": len(illustrated),
        "illustrated_suppressed": sum(not r["reported"] for r in illustrated),
        "illustrated_suppressed_as_forgotten": sum(r["reason"] == "forgotten_domain"
                                                   for r in illustrated),
    }


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
