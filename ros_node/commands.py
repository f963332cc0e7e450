"""CLI for the runtime / ROS stage: `adu replay`, `adu calibrate` and `adu benchmark node`.

Light module: numpy, OpenCV, ONNX Runtime and rclpy are imported only when a command runs,
so `adu --help` stays fast and works on an edge image without ROS.
"""

from adu_perception.cli import CommandError, csv_list, positive_int


def replay_command(args) -> int:
    from adu_perception.runtime.predictor import BackendError
    from adu_perception.runtime.replay import parse_grid, parse_regions, replay

    try:
        summary = replay(args.bundle, args.input, regions=parse_regions(args.regions),
               grid=parse_grid(args.grid), backend=args.backend, out=args.out,
               batch_size=args.batch_size, confidence=args.confidence,
               forgotten_domain=args.forgotten_threshold, top_k=args.top_k,
               max_frames=args.max_frames, topics=args.topics, context_margin=args.context_margin,
               min_real_similarity=args.min_real_similarity)
    except BackendError as error:
        raise CommandError(str(error)) from None
    if not any(counts["regions"] for counts in summary.values()):
        frames = sum(counts["frames"] for counts in summary.values())
        raise CommandError(f"nothing was classified: all {frames} frame(s) read were unreadable "
                           f"or had no region inside them (reasons above)")
    return 0


def calibrate_command(args) -> int:
    from pathlib import Path

    from adu_perception.export.camera_calibration import (calibrate_camera, parameters_yaml,
                                                          summary_lines, write_parameters)
    from adu_perception.runtime.predictor import BackendError
    from adu_perception.runtime.replay import parse_grid, parse_regions

    if args.out and Path(args.out).is_dir():
        raise CommandError(f"--out {args.out} is a folder: give a file name, e.g. "
                           f"{Path(args.out) / 'camera.yaml'}")
    if args.out and not Path(args.out).parent.is_dir():  # before the calibration's minutes
        raise CommandError(f"--out {args.out}: folder {Path(args.out).parent} not found")
    try:
        result = calibrate_camera(args.bundle, args.input, keep=args.keep, backend=args.backend,
                                  regions=parse_regions(args.regions), grid=parse_grid(args.grid),
                                  context_margin=args.context_margin, topics=args.topics,
                                  max_frames=args.max_frames)
        text = parameters_yaml(result, args.namespace, source=args.input)
    except BackendError as error:  # the input's and bundle's errors are ValueErrors: cli.main says them
        raise CommandError(str(error)) from None
    for line in summary_lines(result):
        print(line)
    if args.out:
        print(f"parameters written to {write_parameters(args.out, text)} (launch: params_file:={args.out})")
    else:
        print(text, end="")
    return 0


def node_benchmark_command(args) -> int:
    from adu_perception.runtime.predictor import BackendError

    from .node_benchmark import run_benchmark, run_detections_benchmark

    try:
        if args.detections:
            counts = [int(v) for v in csv_list(args.detections)]
            run_detections_benchmark(args.bundle, counts, frames=args.frames, warmup=args.warmup,
                                     backend=args.backend, frame_size=args.frame_size,
                                     json_out=args.json, threads=args.threads)
        else:
            run_benchmark(args.bundle, frames=args.frames, warmup=args.warmup, backend=args.backend,
                          frame_size=args.frame_size, json_out=args.json)
    except (BackendError, RuntimeError) as error:
        raise CommandError(str(error)) from None
    return 0


def _backends():
    # The list lives in the predictor, but importing it would pull numpy into `adu --help`.
    return ("auto", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


def _add_input_arguments(parser, verb: str) -> None:
    """What replay and calibrate read, and how they cut it into crops (as the node does)."""
    parser.add_argument("--bundle", required=True, help="bundle folder written by `adu export`")
    parser.add_argument("--input", required=True,
                        help="image folder (recursive; summary per immediate subfolder), video "
                        "file (.mp4, .avi, ...), or .mcap with sensor_msgs/Image or "
                        "CompressedImage messages")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--regions", nargs="+", metavar="X,Y,W,H",
                       help=f"{verb} these pixel regions of each frame instead of the whole frame")
    where.add_argument("--grid", metavar="RxC", help=f"{verb} each tile of an R x C grid, e.g. 2x3")
    parser.add_argument("--context-margin", type=float, default=0.0,
                        help="grow each --regions box by this fraction of its size on every side "
                        "before cropping, like the node's context_margin (default: %(default)s)")
    parser.add_argument("--backend", default="auto", choices=_backends(),
                        help="inference backend (default: %(default)s, the best available)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="MCAP only: these image topics (default: all image topics)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")


def register(subparsers) -> None:
    replay = subparsers.add_parser(
        "replay", help="run a bundle over an image folder, a video or an MCAP recording",
        description="Classify recorded frames exactly as the ROS node would (same conversion, "
        "preprocessing, predictor and decision rule) and summarise reported vs suppressed "
        "per source folder / video / topic. Unreadable images are reported and skipped.")
    _add_input_arguments(replay, "classify")
    replay.add_argument("--out", metavar="FILE.jsonl",
                        help="write one JSON line per frame here instead of printing each frame")
    replay.add_argument("--confidence", type=float,
                        help="confidence threshold, in [0, 1] (default: the bundle's)")
    replay.add_argument("--forgotten-threshold", type=float,
                        help="forgotten-domain threshold, in [0, 1] (default: the bundle's)")
    replay.add_argument("--min-real-similarity", type=float,
                        help="open-set threshold, in [-1, 1]: suppress as 'unfamiliar' below this "
                        "real-likeness (default: the bundle's; needs a bundle with a memory bank)")
    replay.add_argument("--top-k", type=positive_int, default=3,
                        help="classes listed per result (default: %(default)s)")
    replay.add_argument("--batch-size", type=positive_int, default=16,
                        help="crops per inference call (default: %(default)s)")
    replay.set_defaults(func=replay_command)

    calibrate = subparsers.add_parser(
        "calibrate", help="per-camera thresholds from real crops of that camera (ROS 2 parameters)",
        description="Runs the bundle over crops that are all real objects or scenes from one "
        "camera (no labels, no illustrations), cut as the node cuts them, and relaxes the "
        "forgotten-domain threshold and min_real_similarity until each rule keeps its share of "
        "them (the export's count, docs/bundle.md). Never stricter than the bundle. Writes a "
        "ROS 2 parameter file for that camera's node (launch argument params_file). Torch-free.")
    _add_input_arguments(calibrate, "use")
    calibrate.add_argument("--keep", type=float, default=0.95,
                           help="share of the real crops to keep reported (default: %(default)s, "
                           "as the export)")
    calibrate.add_argument("--namespace", default="",
                           help="the camera node's namespace, e.g. front (default: every namespace)")
    calibrate.add_argument("--out", help="write the parameter file here (default: print it)")
    calibrate.set_defaults(func=calibrate_command)


def register_benchmarks(subparsers) -> None:
    node = subparsers.add_parser(
        "node", help="end-to-end ROS node latency vs bare inference",
        description="Publish sensor_msgs/Image frames to an in-process classifier node and time "
        "publish -> JSON result, against the same predictor's bare batch-1 inference on the same "
        "machine. Frames are real driving crops from ../shared/data/driving_crops/vehicles when "
        "present, else random. Publishes slower than inference, so it measures latency, not "
        "queueing.")
    node.add_argument("--bundle", required=True, help="bundle folder written by `adu export`")
    node.add_argument("--frames", type=int, default=200, help="timed frames (default: %(default)s)")
    node.add_argument("--warmup", type=int, default=20,
                      help="untimed frames first (default: %(default)s)")
    node.add_argument("--backend", default="auto", choices=_backends(),
                      help="inference backend (default: %(default)s)")
    node.add_argument("--frame-size", metavar="WxH",
                      help="resize frames to this camera size, e.g. 640x480 (default: the crops' "
                      "own size)")
    node.add_argument("--detections", metavar="N[,N...]",
                      help="instead: a camera + detector client sending N boxes per frame as "
                      "vision_msgs/Detection2DArray (e.g. 1,8,32); times header stamp -> "
                      "~/detections + ~/suppressed, per box, and one batched inference call against "
                      "N single-box calls (goal at 32 boxes: <= 0.6x)")
    node.add_argument("--threads", type=int, default=0,
                      help="with --detections: the node's inference_threads (default: %(default)s, "
                      "ONNX Runtime's choice)")
    node.add_argument("--json", metavar="FILE", help="also write the numbers as JSON here")
    node.set_defaults(func=node_benchmark_command)
