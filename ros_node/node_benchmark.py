"""`adu benchmark node`: what the ROS node adds on top of bare inference.

An in-process ClassifierNode and a client node, each spun by its own executor thread. The client publishes a
sensor_msgs/Image (bgr8, like a camera driver), waits for the JSON result, pauses, and
publishes the next, so every frame meets an idle node: this measures latency, not queueing.
The node's own predictor times bare inference at batch 1 on the same preprocessed frames:
back to back, and interleaved with the node's frames at the same pace (so both see the same
machine load, and an idle inference thread pool wakes up alike for both).
Overhead = end-to-end median / interleaved bare median - 1 (goal: <= 15%).

With --detections 1,8,32: the client is a camera plus a detector. Each frame (camera size,
tiled with real driving crops) goes out with a vision_msgs/Detection2DArray of N boxes (the
tiles) under the same header; the node pairs them, classifies all N crops in one batch and
answers on ~/detections and ~/suppressed. Timed: header stamp -> both arrays received (the
latency a tracker sees), per box; and the predictor's batched call on those N crops against N
single-box calls (goal at 32 boxes: batched <= 0.6x the single calls).
"""
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from adu_perception.runtime.images import preprocess

OVERHEAD_GOAL = 0.15
BATCH_GOAL = 0.6  # N boxes in one call vs N single-box calls, at BATCH_GOAL_BOXES boxes
BATCH_GOAL_BOXES = 32
CROPS = Path("data") / "driving_crops" / "vehicles"


def _shared_crops(limit: int = 64):
    """Real camera crops from ../shared (next to the working directory or the source tree)."""
    for shared in (Path.cwd().parent / "shared", Path(__file__).resolve().parents[2] / "shared"):
        files = sorted((shared / CROPS).glob("*.png"))[:limit]
        frames = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in map(cv2.imread, map(str, files))
                  if image is not None]
        if frames:
            return frames, f"{len(frames)} real driving crops from {shared / CROPS}"
    return None, None


def load_frames(frame_size: Optional[str]):
    frames, description = _shared_crops()
    if frames is None:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(16)]
        description = "16 random 64x64 frames (shared driving crops not found)"
    if frame_size:
        width, height = (int(v) for v in frame_size.lower().split("x"))
        frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]
        description += f", resized to {width}x{height}"
    return frames, description


def _summary(milliseconds) -> dict:
    values = np.asarray(milliseconds, dtype=float)
    return {"median_ms": float(np.median(values)), "p95_ms": float(np.percentile(values, 95)),
            "n": int(len(values))}


def _time_predict(predictor, batches, warmup: int, frames: int) -> dict:
    """Milliseconds per predict() call at batch 1, back to back."""
    times = []
    for i in range(warmup + frames):
        started = time.perf_counter()
        predictor.predict(batches[i % len(batches)])
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return _summary(times)


def _image_msg(rgb: np.ndarray, frame_id: str):
    from sensor_msgs.msg import Image

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=bgr.shape[1] * 3,
                data=bgr.tobytes())
    msg.header.frame_id = frame_id
    return msg


def run_benchmark(bundle, frames: int = 200, warmup: int = 20, backend: str = "auto",
                  frame_size: Optional[str] = None, json_out=None, echo=print) -> dict:
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from .classifier_node import ClassifierNode

    images, description = load_frames(frame_size)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ClassifierNode(context=context, namespace="/adu_benchmark", parameter_overrides=[
            Parameter("bundle", value=str(bundle)), Parameter("backend", value=backend),
            Parameter("publish_overlay", value=False)])
        client = rclpy.create_node("benchmark_client", namespace="/adu_benchmark", context=context)
        answered, arrival = threading.Event(), {}

        def on_result(msg):
            arrival[json.loads(msg.data)["frame_id"]] = time.perf_counter()
            answered.set()

        camera = client.create_publisher(Image, "image", 10)
        client.create_subscription(String, "classifier_node/classification", on_result, 10)
        with _spinning(context, node, client, lambda: camera.get_subscription_count() > 0 and
                       client.count_publishers("/adu_benchmark/classifier_node/classification") > 0):

            # Bare inference: the node's own predictor, batch 1, same frames preprocessed.
            predictor = node.predictor
            batches = [preprocess([rgb], predictor.bundle.input_size) for rgb in images]
            bare_stats = _time_predict(predictor, batches, warmup, frames)
            # Idle gap between frames: the node is never busy when the next frame arrives.
            gap = max(0.005, 2 * bare_stats["median_ms"] / 1000)

            paced, end_to_end, lost = [], [], 0
            messages = [_image_msg(rgb, "") for rgb in images]
            for i in range(warmup + frames):
                started = time.perf_counter()
                predictor.predict(batches[i % len(batches)])
                if i >= warmup:
                    paced.append((time.perf_counter() - started) * 1000)
                time.sleep(gap)
                msg = messages[i % len(messages)]
                msg.header.frame_id = f"frame{i}"
                msg.header.stamp = client.get_clock().now().to_msg()
                answered.clear()
                started = time.perf_counter()
                camera.publish(msg)
                if not answered.wait(timeout=5.0) or msg.header.frame_id not in arrival:
                    lost += 1
                    continue
                if i >= warmup:
                    end_to_end.append((arrival[msg.header.frame_id] - started) * 1000)
                time.sleep(gap)
            node_stats = node.stats()
            paced_stats = _summary(paced)
            chosen = predictor.backend
    finally:
        rclpy.try_shutdown(context=context)

    if not end_to_end:
        raise RuntimeError("no frame was answered by the node")
    e2e = _summary(end_to_end)
    ratio = e2e["median_ms"] / paced_stats["median_ms"]
    result = {
        "bundle": str(bundle), "backend": chosen, "frames": description,
        "input_size": predictor.bundle.input_size, "lost_frames": lost,
        "bare_inference": bare_stats, "bare_inference_paced": paced_stats,
        "frame_gap_ms": gap * 1000,
        "node_processing": {"median_ms": node_stats["latency_p50_ms"],
                            "p95_ms": node_stats["latency_p95_ms"]},
        "end_to_end": e2e,
        "overhead_ratio": ratio, "overhead_goal": 1 + OVERHEAD_GOAL,
        "overhead_goal_met": ratio <= 1 + OVERHEAD_GOAL,
    }
    return _report(result, format_table(result), json_out, echo)


def format_table(result: dict) -> str:
    rows = [("bare inference (batch 1, back to back)", result["bare_inference"]),
            ("bare inference (batch 1, between node frames)",
             result["bare_inference_paced"]),
            ("node processing (receive -> publish)", result["node_processing"]),
            ("end to end (publish -> JSON received)", result["end_to_end"])]
    lines = [f"node benchmark: {result['bundle']}", f"backend {result['backend']}, input "
             f"{result['input_size']} px, frames: {result['frames']}",
             f"{'measure':40s} {'median ms':>10s} {'p95 ms':>10s}"]
    lines += [f"{name:40s} {v['median_ms']:10.3f} {v['p95_ms']:10.3f}" for name, v in rows]
    overhead = result["overhead_ratio"] - 1
    lines.append(f"overhead: end to end / interleaved bare = {result['overhead_ratio']:.2f}x ({overhead:+.0%}); "
                 f"goal <= +{OVERHEAD_GOAL:.0%}: {'met' if result['overhead_goal_met'] else 'NOT met'}"
                 + (f"; {result['lost_frames']} frames lost" if result["lost_frames"] else ""))
    return "\n".join(lines)


# -- detections mode ---------------------------------------------------------------------------

def tiled_frame(crops, width: int = 640, height: int = 480, cols: int = 8, rows: int = 4):
    """A camera frame tiled with crops (cols x rows tiles) and the tiles' regions."""
    frame = np.zeros((height, width, 3), np.uint8)
    regions = []
    for index in range(cols * rows):
        r, c = divmod(index, cols)
        x0, x1 = width * c // cols, width * (c + 1) // cols
        y0, y1 = height * r // rows, height * (r + 1) // rows
        crop = crops[index % len(crops)]
        frame[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        regions.append((x0, y0, x1 - x0, y1 - y0))
    return frame, regions


def _time_batching(predictor, crops, boxes: int, repeats: int) -> dict:
    """Median ms of one predict() on `boxes` crops vs `boxes` predict() calls of one crop,
    alternated so both see the same machine load."""
    size = predictor.bundle.input_size
    batch = preprocess(crops[:boxes], size)
    singles = [batch[i:i + 1] for i in range(boxes)]
    batched, single = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict(batch)
        batched.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        for one in singles:
            predictor.predict(one)
        single.append((time.perf_counter() - started) * 1000)
    return {"batched": _summary(batched), "single_calls": _summary(single),
            "ratio": float(np.median(batched) / np.median(single))}


def run_detections_benchmark(bundle, counts=(1, 8, 32), frames: int = 30, warmup: int = 5,
                             backend: str = "auto", frame_size: Optional[str] = None,
                             json_out=None, echo=print, threads: int = 0) -> dict:
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from . import vision_io
    from .classifier_node import ClassifierNode

    if not vision_io.AVAILABLE:
        raise RuntimeError(f"--detections needs vision_msgs: {vision_io.MISSING}")
    if not counts or min(counts) < 1:
        raise ValueError(f"--detections needs box counts >= 1, got {list(counts)}")
    crops, description = load_frames(None)
    width, height = (int(v) for v in (frame_size or "640x480").lower().split("x"))
    cols = int(np.ceil(np.sqrt(max(counts) * width / height)))
    rows = int(np.ceil(max(counts) / cols))
    frame, regions = tiled_frame(crops, width, height, cols, rows)
    context = rclpy.Context()
    rclpy.init(context=context)
    rows_out = []
    try:
        node = ClassifierNode(context=context, namespace="/adu_benchmark", parameter_overrides=[
            Parameter("bundle", value=str(bundle)), Parameter("backend", value=backend),
            Parameter("publish_overlay", value=False), Parameter("use_detections", value=True),
            Parameter("inference_threads", value=int(threads))])
        client = rclpy.create_node("benchmark_client", namespace="/adu_benchmark", context=context)
        arrived, answered = {}, threading.Event()

        def on_output(msg):
            key = msg.header.frame_id
            arrived.setdefault(key, []).append(time.time_ns())
            if len(arrived[key]) == 2:  # ~/detections and ~/suppressed both in
                answered.set()

        camera = client.create_publisher(Image, "image", 10)
        detector = client.create_publisher(vision_io.Detection2DArray, "detections", 10)
        for topic in ("detections", "suppressed"):
            client.create_subscription(vision_io.Detection2DArray, f"classifier_node/{topic}",
                                       on_output, 10)
        client.create_subscription(String, "classifier_node/classification", lambda m: None, 10)
        with _spinning(context, node, client, lambda: camera.get_subscription_count() > 0
                       and detector.get_subscription_count() > 0
                       and client.count_publishers("/adu_benchmark/classifier_node/suppressed") > 0):
            predictor = node.predictor
            image = _image_msg(frame, "")
            tile_crops = [frame[y:y + h, x:x + w] for x, y, w, h in regions]
            for boxes in counts:
                batching = _time_batching(predictor, tile_crops, boxes, max(3, frames // 3))
                gap = max(0.005, 2 * batching["batched"]["median_ms"] / 1000)
                latencies, lost = [], 0
                for i in range(warmup + frames):
                    image.header.frame_id = f"n{boxes}_frame{i}"
                    image.header.stamp = client.get_clock().now().to_msg()
                    stamp_ns = image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec
                    array = vision_io.detection_array(image.header, [
                        vision_io.Detection2D(header=image.header, id=str(b),
                                              bbox=vision_io.bbox_of(regions[b]))
                        for b in range(boxes)])
                    answered.clear()
                    camera.publish(image)
                    detector.publish(array)
                    if not answered.wait(timeout=30.0):
                        lost += 1
                        continue
                    if i >= warmup:
                        latencies.append((max(arrived[image.header.frame_id]) - stamp_ns) / 1e6)
                    time.sleep(gap)
                e2e = _summary(latencies) if latencies else None
                rows_out.append({"boxes": boxes, "lost_frames": lost, "end_to_end_from_stamp": e2e,
                                 "per_box_ms": e2e["median_ms"] / boxes if e2e else None,
                                 **batching})
            chosen, input_size = predictor.backend, predictor.bundle.input_size
    finally:
        rclpy.try_shutdown(context=context)

    goal_row = next((r for r in rows_out if r["boxes"] == BATCH_GOAL_BOXES), None)
    result = {"bundle": str(bundle), "backend": chosen, "input_size": input_size,
              "inference_threads": threads or "onnxruntime default",
              "frame": f"{width}x{height} tiled with {description}", "rows": rows_out,
              "batch_goal": BATCH_GOAL, "batch_goal_boxes": BATCH_GOAL_BOXES,
              "batch_goal_met": None if goal_row is None else goal_row["ratio"] <= BATCH_GOAL}
    return _report(result, format_detections_table(result), json_out, echo)


@contextlib.contextmanager
def _spinning(context, node, client, discovered):
    """Spin the node and the benchmark client, each by its own single-threaded executor (as
    `ros2 run` / rclpy.spin would), for the block; wait up to 10 s for `discovered()` first.
    Both nodes are destroyed when the block ends."""
    from rclpy.executors import SingleThreadedExecutor

    executors = [SingleThreadedExecutor(context=context) for _ in range(2)]
    executors[0].add_node(node)
    executors[1].add_node(client)
    spinners = [threading.Thread(target=e.spin, daemon=True) for e in executors]
    for spinner in spinners:
        spinner.start()
    try:
        deadline = time.monotonic() + 10
        while not discovered():
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark client never discovered the node")
            time.sleep(0.01)
        yield
    finally:
        for executor, spinner in zip(executors, spinners):
            executor.shutdown()
            spinner.join(timeout=5)
        node.destroy_node()
        client.destroy_node()


def _report(result: dict, table: str, json_out, echo) -> dict:
    """Print the table; write the result as JSON when asked."""
    echo(table)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
        echo(f"JSON written to {json_out}")
    return result


def format_detections_table(result: dict) -> str:
    lines = [f"node benchmark, detections: {result['bundle']}",
             f"backend {result['backend']} (threads: {result['inference_threads']}), input "
             f"{result['input_size']} px, frame {result['frame']}",
             f"{'boxes':>5s} {'stamp->outputs ms':>18s} {'p95 ms':>8s} {'per box ms':>10s} "
             f"{'1 batched call ms':>17s} {'N single calls ms':>17s} {'batched/single':>14s}"]
    for row in result["rows"]:
        e2e = row["end_to_end_from_stamp"] or {"median_ms": float("nan"), "p95_ms": float("nan")}
        lines.append(f"{row['boxes']:5d} {e2e['median_ms']:18.2f} {e2e['p95_ms']:8.2f} "
                     f"{row['per_box_ms'] or float('nan'):10.3f} {row['batched']['median_ms']:17.2f} "
                     f"{row['single_calls']['median_ms']:17.2f} {row['ratio']:14.2f}"
                     + (f"  ({row['lost_frames']} frames lost)" if row["lost_frames"] else ""))
    if result["batch_goal_met"] is not None:
        lines.append(f"goal: {result['batch_goal_boxes']} boxes in one call <= "
                     f"{result['batch_goal']:.1f}x the time of {result['batch_goal_boxes']} single calls: "
                     f"{'met' if result['batch_goal_met'] else 'NOT met'}")
    return "\n".join(lines)
