"""CLI for `adu demo` (light module: the heavy imports happen when the command runs)."""
from pathlib import Path

from adu_perception.cli import CommandError, csv_list, non_negative_int, positive_int
from adu_perception.training.config import RENDERED_MODES  # dataclasses only, no torch

from .pipeline import DemoOptions  # stdlib only at import time

# options of the tiny CLIP's pretraining: they mean something only with --pretrain-clip
PRETRAIN_OPTIONS = ("pretrain_images", "pretrain_epochs", "pretrain_unmasked", "medium_captions", "pretrain_families")


def demo_command(args) -> int:
    from adu_perception.export.onnx_export import ExportError
    from adu_perception.training.checkpoint import CheckpointError

    from .pipeline import run_demo

    # only those given: DemoOptions keeps its defaults for the rest
    pretraining = {name: getattr(args, name) for name in PRETRAIN_OPTIONS if getattr(args, name) is not None}
    if pretraining and not args.pretrain_clip:
        given = ", ".join(f"--{name.replace('_', '-')}" for name in pretraining)
        raise CommandError(f"options of the tiny CLIP's pretraining ({given}) apply only with "
                           f"--pretrain-clip (the demo starts from the shipped tiny CLIP by default)")
    options = DemoOptions(
        out=Path(args.out), seed=args.seed, clip=args.clip,
        pretrained=args.pretrained or args.pretrained_file, model_config=args.model_config,
        data=args.data, split_file=args.split_file, forget=csv_list(args.forget),
        memorize=csv_list(args.memorize), pretrain_clip=args.pretrain_clip, **pretraining,
        downstream_images=args.downstream_images, shots=args.shots,
        calibration_shots=args.calibration_shots, epochs=args.epochs,
        domain_lr=args.domain_lr, forget_weight=args.forget_weight, rendered=args.rendered,
        texture_head=args.texture_head == "on",
        methods=csv_list(args.methods), drive_frames=args.drive_frames,
        unseen_style_images=args.unseen_style_images,
        context_margin=args.context_margin, force=args.force)
    try:
        run_demo(options)
    except (ExportError, CheckpointError) as error:
        raise CommandError(str(error)) from None
    return 0


def register(subparsers) -> None:
    defaults = DemoOptions()
    demo = subparsers.add_parser(
        "demo", help="the whole pipeline end to end on an embedded default (no download, no GPU)",
        description="Generate a small driving world (photo, cartoon, sketch, billboard), start from the "
        "tiny CLIP shipped with the package (or pretrain one on the world: --pretrain-clip), train Baseline "
        "and ADU prompts that forget the illustration domains, report Mem/For/H, export an ONNX bundle, and "
        "run the real ROS 2 node over a generated drive. About 2 minutes on 2 idle CPU cores (9 with "
        "--pretrain-clip). "
        "With --data and a real CLIP the same steps run on your dataset (the drive is skipped).")
    demo.add_argument("--out", default=str(defaults.out),
                      help="output folder, replaced on a rerun (default: %(default)s)")
    demo.add_argument("--seed", type=non_negative_int, default=defaults.seed, help="seed for everything (default: %(default)s)")
    demo.add_argument("--force", action="store_true", help="replace --out even if another command wrote it")
    group = demo.add_argument_group("frozen CLIP (default: the tiny one shipped with the package)")
    group.add_argument("--pretrain-clip", action="store_true",
                       help="opt-in: pretrain a tiny CLIP on this seed's generated world instead of starting "
                       "from the shipped one (about 6 minutes more; measured in the README)")
    group.add_argument("--clip", help="open_clip model name, e.g. ViT-B-16")
    group.add_argument("--pretrained", help="pretrained tag (e.g. openai, needs internet) or checkpoint file")
    group.add_argument("--model-config", help="open_clip model config JSON for a local model")
    group.add_argument("--checkpoint", dest="pretrained_file", help="alias of --pretrained for a local file")
    group = demo.add_argument_group("data (default: the generated world)")
    group.add_argument("--data", help="dataset root <root>/<domain>/<class>/* instead of the generated world")
    group.add_argument("--split-file", help="optional split file for --data (see `adu train --help`)")
    group.add_argument("--forget", help="comma-separated domains to forget (default for the world: "
                       "cartoon,sketch,billboard; required with --data)")
    group.add_argument("--memorize", help="comma-separated domains to keep (default: all others)")
    group = demo.add_argument_group("sizes")
    group.add_argument("--pretrain-images", type=positive_int,
                       help="generated images per (class, domain) to pretrain the tiny "
                       f"CLIP (default: {defaults.pretrain_images})")
    group.add_argument("--downstream-images", type=positive_int, default=defaults.downstream_images,
                       help="generated images per (class, domain) for unlearning: shots for "
                       "training, the rest for testing (default: %(default)s)")
    group.add_argument("--pretrain-epochs", type=positive_int,
                       help=f"tiny CLIP pretraining epochs (default: {defaults.pretrain_epochs})")
    group.add_argument("--pretrain-unmasked", type=float,
                       help="share of the last tiny CLIP pretraining steps that see every "
                       f"patch (FLIP's unmasked tuning after patch dropout); 0: none (default: "
                       f"{defaults.pretrain_unmasked})")
    group.add_argument("--medium-captions", type=float,
                       help="share of the tiny CLIP's pretraining steps whose captions name "
                       "the medium (\"a pencil sketch of a car.\"), as many web captions do; 0: never "
                       f"(default: {defaults.medium_captions})")
    group.add_argument("--pretrain-families", type=csv_list,
                       help="comma-separated `adu stylize` families added to the tiny CLIP's pretraining "
                       "as media of their own (world photos re-drawn, captions naming the medium; "
                       "pretrain images / 4 per class and family); the unseen-style mean leaves them "
                       "out (default: none)")
    group.add_argument("--shots", type=positive_int, default=defaults.shots,
                       help="training images per (class, domain) (default: %(default)s)")
    group.add_argument("--calibration-shots", type=non_negative_int, default=defaults.calibration_shots,
                       help="images per (class, domain) held out to choose the bundle's decision "
                       "thresholds (default: %(default)s)")
    group.add_argument("--epochs", type=non_negative_int, default=defaults.epochs, help="prompt-training epochs (default: %(default)s)")
    group.add_argument("--domain-lr", type=float, default=defaults.domain_lr,
                       help="opt-in: a separate learning rate for the domain classifier "
                       "(default: one SGD group at the paper's 0.0025, as the authors)")
    group.add_argument("--forget-weight", type=float, default=defaults.forget_weight,
                       help="opt-in: weight of the maximised forgotten-domain entropy against the "
                       "memorised cross-entropy (default: %(default)s, the authors')")
    group.add_argument("--rendered", choices=RENDERED_MODES, default=defaults.rendered,
                       help="opt-in: rendered illustrations of the memorised training shots as extra "
                       "forgotten domains, pooled or one per family (default: %(default)s)")
    group.add_argument("--texture-head", choices=("on", "off"), default="on" if defaults.texture_head else "off",
                       help="opt-in: export the bundle with a texture head (`adu export --texture-head`), "
                       "for --data with images of at least twice the model's input size; the generated "
                       "world's 64 px images are refused (docs/demo_experiments.md; default: %(default)s)")
    group.add_argument("--methods", default=",".join(defaults.methods),
                       help="methods to train and compare; the last of them, or adu, is exported "
                       "(default: %(default)s)")
    group.add_argument("--drive-frames", type=non_negative_int, default=defaults.drive_frames,
                       help="generated drive frames sent through the node; 0 skips the drive (default: %(default)s)")
    group.add_argument("--unseen-style-images", type=non_negative_int, default=defaults.unseen_style_images,
                       help="fresh photos per class re-drawn in each `adu stylize` family (styles the "
                       "demo never trains on) and scored with the bundle; 0 skips (default: %(default)s)")
    group.add_argument("--context-margin", type=float, default=defaults.context_margin,
                       help="the node's context_margin for the drive: grow each box by this "
                       "fraction per side before cropping (default: the node's default)")
    demo.set_defaults(func=demo_command)
