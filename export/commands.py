"""CLI for the export stage: `adu export`, `adu engine`, `adu benchmark latency`.

Light module: torch, onnx and tensorrt are imported only when a command runs.
"""
import json

# Export/engine failures are user-facing: one clear line, non-zero exit (cli.main).
from adu_perception.cli import CommandError, csv_list, positive_int


def export_command(args) -> int:
    from adu_perception.training.checkpoint import CheckpointError

    from .onnx_export import ExportError, export_bundle

    try:
        bundle = export_bundle(args.run, args.out, opset=args.opset, parity_images=args.parity_images,
                               data_root=args.data, overwrite=args.force,
                               open_set=args.open_set == "on", texture_head=args.texture_head == "on",
                               texture_zoom=args.texture_zoom,
                               texture_artefacts=args.texture_artefacts == "on")
    except (ExportError, CheckpointError) as error:
        raise CommandError(str(error)) from None
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity, thresholds = manifest["parity"], manifest["thresholds"]
    print(f"bundle: {bundle}")
    print(f"parity ({parity['n_images']} images, {parity['provider']}): max |dprobs| "
          f"{parity['max_abs_diff_probs']:.2e}, top-1 agreement {parity['top1_agreement']:.1%}")
    print(f"thresholds: confidence {thresholds['confidence']:.2f}, forgotten_domain "
          f"{thresholds['forgotten_domain']:.2f} -> memorized correct kept "
          f"{thresholds['memorized_correct_kept']:.1%} of {thresholds['n_memorized_correct']}, "
          f"forgotten suppressed {thresholds['forgotten_suppressed']:.1%} of {thresholds['n_forgotten']}")
    open_set = manifest.get("open_set")
    if open_set:
        print(f"open set: {open_set['score']}, k {open_set['k']}, {open_set['n_bank']} bank rows; "
              f"min_real_similarity {thresholds['min_real_similarity']:.4f} (test: "
              f"{thresholds['n_forgotten_suppressed_unfamiliar']} forgotten suppressed as unfamiliar)")
    else:
        print("open set: off (no memory bank; the 'unfamiliar' rule is off)")
    texture = manifest.get("texture")
    if texture:
        print(f"texture head: crops read at {texture['input_size']} px, {texture['fitted_on']} (test: "
              f"{thresholds['n_forgotten_suppressed_texture']} forgotten suppressed for their texture)")
    else:
        print("texture head: off (rule 1 reads the domain head only)")
    return 0


def engine_command(args) -> int:
    from .engine import EngineError, build_engine

    try:
        plan = build_engine(args.bundle, precision=args.precision, workspace_mib=args.workspace,
                            min_batch=args.min_batch, opt_batch=args.opt_batch,
                            max_batch=args.max_batch, calib_dir=args.calib_dir, force=args.force)
    except EngineError as error:
        raise CommandError(str(error)) from None
    print(plan)
    return 0


def latency_command(args) -> int:
    from pathlib import Path

    from .latency import bundle_latency, format_table, random_weights_latency

    batches = [int(v) for v in csv_list(args.batches)]
    providers = csv_list(args.providers) or None
    if args.clip:
        if not args.random_weights:
            raise CommandError("--clip needs --random-weights: no pretrained weights can be "
                                 "downloaded here, and latency does not depend on them")
        result = random_weights_latency(args.clip, providers, batches, args.warmup or 2,
                                        args.repeats or 10)
    elif args.bundle:
        result = bundle_latency(args.bundle, providers, batches, args.warmup or 5, args.repeats or 50)
    else:
        raise CommandError("give --bundle B, or --clip NAME --random-weights")
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 0


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="export a trained run to a bundle (model.onnx + manifest.json)",
        description="Exports the run's AduModel to ONNX (uint8 NHWC in, probs/logits/domain_probs/"
        "embeddings out), checks ONNX Runtime against PyTorch on the run's test images, chooses "
        "the decision thresholds and writes the bundle atomically (see docs/bundle.md).")
    export.add_argument("--run", required=True, help="run folder written by `adu train`")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: %(default)s)")
    export.add_argument("--parity-images", type=positive_int, default=64,
                        help="test images (half memorized, half forgotten domains) for the "
                        "ONNX Runtime vs PyTorch check (default: %(default)s)")
    export.add_argument("--data", help="dataset root if it moved since training")
    export.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    export.add_argument("--open-set", choices=("on", "off"), default="on",
                        help="on: store a memory bank of the memorised domains' training images "
                        "and suppress items unlike all of them as 'unfamiliar'; off: no bank, "
                        "that rule off (default: %(default)s)")
    export.add_argument("--texture-head", choices=("on", "off"), default="off",
                        help="on: fit a texture head on the run's training images read at "
                        "--texture-zoom x the input size, and suppress items whose texture is not "
                        "a photo's at the forgotten-domain threshold (docs/bundle.md; default: %(default)s)")
    export.add_argument("--texture-zoom", type=int, default=2,
                        help="the texture head reads crops at this many times the input size (default: %(default)s)")
    export.add_argument("--texture-artefacts", choices=("on", "off"), default="on",
                        help="on: fit the texture head on copies of every image with camera artefacts "
                        "(JPEG, noise, blur, sharpening) too, so that a camera's own texture is not taken "
                        "for an illustration's; off: originals only (default: %(default)s)")
    export.set_defaults(func=export_command)

    engine = subparsers.add_parser(
        "engine", help="build a TensorRT engine for a bundle (NVIDIA GPU + TensorRT 10)",
        description="Builds a serialized TensorRT engine beside the bundle's model.onnx, named by "
        "ONNX sha256, TensorRT version, GPU and precision; a cached engine is reused, and one "
        "that does not match is refused unless --force.")
    engine.add_argument("--bundle", required=True, help="bundle folder written by `adu export`")
    engine.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"),
                        help="fp16/int8 keep LayerNorm, softmax and reductions in fp32 (default: %(default)s)")
    engine.add_argument("--workspace", type=positive_int, default=2048, help="builder workspace in MiB (default: %(default)s)")
    engine.add_argument("--min-batch", type=positive_int, default=1, help="smallest batch of the profile (default: %(default)s)")
    engine.add_argument("--opt-batch", type=positive_int, default=1, help="batch TensorRT tunes for (default: %(default)s)")
    engine.add_argument("--max-batch", type=positive_int, default=8, help="largest batch of the profile (default: %(default)s)")
    engine.add_argument("--calib-dir", help="folder of representative images for int8 calibration")
    engine.add_argument("--force", action="store_true", help="rebuild even if a cached engine exists or mismatches")
    engine.set_defaults(func=engine_command)


def register_benchmarks(subparsers) -> None:
    latency = subparsers.add_parser(
        "latency", help="ONNX Runtime latency of ADU vs the same backbone without prompts",
        description="Times (a) the ADU graph and (b) the backbone exported without prompts or "
        "InstaPG, alternately, at each batch size on each available provider; prints median, "
        "p90 and the ratio (a)/(b).")
    latency.add_argument("--bundle", help="bundle folder; (b) is exported from its source checkpoint")
    latency.add_argument("--clip", help="open_clip model name for a synthetic ADU at that size, "
                         "e.g. ViT-B-16 (with --random-weights)")
    latency.add_argument("--random-weights", action="store_true",
                         help="random weights for --clip (latency does not depend on weights)")
    latency.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default: %(default)s)")
    latency.add_argument("--repeats", type=int, help="timed calls per model and batch "
                         "(default: 50 for --bundle, 10 for --clip)")
    latency.add_argument("--warmup", type=int, help="untimed calls first (default: 5 for --bundle, 2 for --clip)")
    latency.add_argument("--providers", help="comma-separated ONNX Runtime providers "
                         "(default: TensorRT, CUDA and CPU, those available)")
    latency.add_argument("--json", help="also write the results as JSON here")
    latency.set_defaults(func=latency_command)
