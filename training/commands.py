"""CLI for the training stage: `adu train`, `adu evaluate`, `adu benchmark unlearning`.

Light module: torch and open_clip are imported only when a command runs.
"""
import argparse

from adu_perception.cli import CommandError, csv_list

from .config import DDL_WEIGHTINGS, METHODS, RENDERED_MODES, TrainConfig

DEFAULTS = TrainConfig()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("frozen CLIP (a built-in open_clip name, or a JSON config + local checkpoint)")
    group.add_argument("--clip", help="open_clip model name, e.g. ViT-B-16 (default with "
                       "--model-config: the JSON file's stem)")
    group.add_argument("--pretrained", help="pretrained tag (e.g. openai, needs internet) or a "
                       "local checkpoint file, e.g. ../shared/models/proxy-clip/proxy-vit-tiny-96.pt")
    group.add_argument("--model-config", help="open_clip model config JSON for a local model, "
                       "e.g. ../shared/models/proxy-clip/proxy-vit-tiny-96.json")
    group.add_argument("--checkpoint", dest="pretrained_file", help="alias of --pretrained for a local file")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (<root>/<domain>/<class>/* image folders)")
    group.add_argument("--data", required=True, help="dataset root, e.g. ../shared/data/pacs")
    group.add_argument("--split-file", help="file of 'domain/class/file<TAB>split' lines restricting "
                       "which images may be used (e.g. the proxy's splits.txt)")
    group.add_argument("--split", default=DEFAULTS.split, help="split name to use from --split-file "
                       "(default: %(default)s)")
    group.add_argument("--shots", type=int, default=DEFAULTS.shots,
                       help="training images per (class, domain); the rest is the test set (default: %(default)s)")
    group.add_argument("--calibration-shots", type=int, default=DEFAULTS.calibration_shots,
                       help="images per (class, domain) held out from training and testing, on "
                       "which `adu export` chooses the decision thresholds (default: %(default)s)")
    group.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for sampling, "
                       "initialisation and augmentation (default: %(default)s)")
    group.add_argument("--workers", type=int, default=DEFAULTS.workers,
                       help="image decoding threads (default: %(default)s)")


def add_domain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forget", required=True, help="comma-separated domains to forget, e.g. sketch,cartoon")
    parser.add_argument("--memorize", help="comma-separated domains to keep (default: all others)")


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("method and optimisation (defaults: the authors' code)")
    group.add_argument("--prompt-tokens", type=int, default=DEFAULTS.prompt_tokens,
                       help="visual prompt tokens per layer (default: %(default)s)")
    group.add_argument("--prompt-depth", type=int, default=DEFAULTS.prompt_depth,
                       help="prompted image blocks from the first (default: 3/4 of the encoder, "
                       "rounded half up, never the last block: 9 of 12 as in the paper, 5 of 6)")
    group.add_argument("--instapg-layer", type=int, help="1-based block whose prompts InstaPG "
                       "generates (default: the last prompted block)")
    group.add_argument("--text-prompt-tokens", type=int, default=DEFAULTS.text_prompt_tokens,
                       help="learned text context tokens (default: %(default)s)")
    group.add_argument("--text-prompt-depth", type=int, default=DEFAULTS.text_prompt_depth,
                       help="prompted text blocks from the first, clipped to the text encoder "
                       "(default: %(default)s)")
    group.add_argument("--forget-weight", type=float, default=DEFAULTS.forget_weight,
                       help="opt-in: weight of the maximised forgotten-domain entropy against the "
                       "memorised cross-entropy (default: %(default)s, the authors'; below 1 keeps "
                       "more memorised accuracy and forgets less)")
    group.add_argument("--gamma", type=float, default=DEFAULTS.gamma,
                       help="weight of the domain classifier's cross-entropy (default: %(default)s)")
    group.add_argument("--lambda", dest="lam", type=float, default=DEFAULTS.lam,
                       help="weight of the maximised MMD^2 of the domain classifier's outputs "
                       "(default: %(default)s, the authors' run script; the paper text: 10)")
    group.add_argument("--ddl-weights", choices=DDL_WEIGHTINGS, default=DEFAULTS.ddl_weights,
                       help="relative: gamma and lambda hold at CLIP's logit scale 100 and are "
                       "scaled by logit_scale/100 for other models (unchanged for OpenAI/LAION "
                       "CLIP); absolute: used as given (default: %(default)s)")
    group.add_argument("--rendered", choices=RENDERED_MODES, default=DEFAULTS.rendered,
                       help="add rendered illustrations of the memorised training shots (adu "
                       "stylize's families) as forgotten domains: one pooled domain 'rendered' "
                       "or one domain per family (default: %(default)s)")
    group.add_argument("--rendered-families", type=csv_list, default=[],
                       help="comma-separated families for --rendered (default: all)")
    group.add_argument("--template", default=DEFAULTS.template,
                       help="zero-shot CLIP's fixed text prompt (default: %(default)r)")
    group.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="default: %(default)s")
    group.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="default: %(default)s")
    group.add_argument("--lr", type=float, default=DEFAULTS.lr, help="SGD learning rate, cosine "
                       "schedule (default: %(default)s)")
    group.add_argument("--domain-lr", type=float, help="opt-in: a separate learning rate for "
                       "the linear domain classifier (default: one SGD group at --lr, as the authors)")
    group.add_argument("--warmup-epochs", type=int, default=DEFAULTS.warmup_epochs,
                       help="epochs at --warmup-lr before the cosine schedule (default: %(default)s)")
    group.add_argument("--warmup-lr", type=float, default=DEFAULTS.warmup_lr, help="default: %(default)s")
    group.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="default: %(default)s")
    group.add_argument("--device", default=DEFAULTS.device,
                       help="auto (CUDA with AMP if present, else CPU), cpu, cuda, cuda:1 ... (default: %(default)s)")


def config_from_args(args, **overrides) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if getattr(args, "pretrained_file", None):
        values["pretrained"] = args.pretrained_file
    values.update(overrides)
    return TrainConfig(**values)


def train_command(args) -> int:
    from pathlib import Path

    from .checkpoint import checkpoint_path
    from .pipeline import train_and_evaluate

    out = Path(args.out)
    if out.is_file():
        raise CommandError(f"--out {out} is a file; name a folder for the run")
    if checkpoint_path(out).is_file() and not (args.resume or args.force):
        raise CommandError(f"--out {out} already holds a run; --resume continues it, --force "
                           f"replaces it, or choose another --out")
    config = config_from_args(args, forget=csv_list(args.forget), memorize=csv_list(args.memorize))
    train_and_evaluate(config, args.out, resume=args.resume)
    print(open(f"{args.out}/metrics.md").read())
    return 0


def evaluate_command(args) -> int:
    from pathlib import Path

    from .pipeline import evaluate_run

    evaluate_run(args.run, args.data)
    print((Path(args.run) / "metrics.md").read_text())
    return 0


def benchmark_unlearning_command(args) -> int:
    from .benchmark import results_table, run_unlearning_benchmark, write_report

    config = config_from_args(args, forget=["-"])
    sizes = [int(v) for v in csv_list(args.forget_sizes)]
    seeds = [int(v) for v in csv_list(args.seeds)] if args.seeds else []
    report = run_unlearning_benchmark(config, csv_list(args.methods), sizes, args.work_dir, seeds)
    write_report(report, args.out)
    print(results_table(report))
    print(f"\n{report['setup']['seconds']:.0f} s; JSON written to {args.out}")
    return 0


def benchmark_styles_command(args) -> int:
    from .rendered import resolve_families
    from .styles_benchmark import run_styles_benchmark, summary_table, write_report

    config = config_from_args(args, forget=csv_list(args.forget), memorize=csv_list(args.memorize))
    config.validate()
    seeds = [int(v) for v in csv_list(args.seeds)] if args.seeds else [config.seed]
    families = resolve_families(args.families)
    held_out = families if args.held_out_families is None else resolve_families(args.held_out_families) \
        if args.held_out_families else []
    report = run_styles_benchmark(config, csv_list(args.methods), families, held_out, args.held_out_domains,
                                  seeds, args.work_dir, reference=not args.no_reference, knn_k=args.knn_k,
                                  texture_zoom=args.texture_zoom,
                                  texture_artefacts=args.texture_artefacts == "on")
    write_report(report, args.out)
    print(summary_table(report))
    print(f"\n{report['setup']['seconds']:.0f} s; JSON, table and curves written beside {args.out}")
    return 0


def merge_styles_command(args) -> int:
    import json
    from pathlib import Path

    from .styles_benchmark import merge_reports, summary_table, write_report

    report = merge_reports([json.loads(Path(path).read_text()) for path in args.reports])
    write_report(report, args.out)
    print(summary_table(report))
    return 0


def ddl_diagnostics_command(args) -> int:
    import json

    from .clip_loader import ClipSpec, load_clip
    from .diagnostics import domain_separability, format_balance, format_separability, loss_gradient_norms
    from .trainer import prepare_data

    config = config_from_args(args, forget=csv_list(args.forget), memorize=csv_list(args.memorize),
                              method="adu")
    config.validate()
    clip = load_clip(ClipSpec.from_args(config.clip, config.pretrained, config.model_config))
    data = prepare_data(config, clip.image_size)  # decoded once for both diagnostics
    result = {"loss_balance": loss_gradient_norms(config, clip, data, batches=args.batches),
              "separability": domain_separability(config, clip, data)}
    print(format_balance(result["loss_balance"]))
    print(format_separability(result["separability"]))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return 0


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train ADU prompts on a frozen CLIP and evaluate Mem/For/H",
                                  description="Few-shot ADU training on multi-domain image folders; "
                                  "writes OUT/checkpoint.pt, metrics.json/.md and PNG plots.")
    add_data_arguments(train)
    add_model_arguments(train)
    add_method_arguments(train)
    train.add_argument("--method", default=DEFAULTS.method, choices=list(METHODS),
                       help="zeroshot | baseline (text + visual prompts, L_mem + L_forget) | "
                       "instapg | ddl | adu (DDL + InstaPG) | adu-ce-only | adu-mmd-only "
                       "(ablations inside DDL) (default: %(default)s)")
    add_domain_arguments(train)
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--force", action="store_true", help="replace a run already in --out")
    train.set_defaults(func=train_command)

    evaluate = subparsers.add_parser("evaluate", help="re-evaluate a finished run on its test split",
                                     description="Recompute Mem/For/H, per-domain accuracy, reports and plots.")
    evaluate.add_argument("--run", required=True, help="run folder written by `adu train`")
    evaluate.add_argument("--data", help="dataset root if it moved since training")
    evaluate.set_defaults(func=evaluate_command)


def register_benchmarks(subparsers) -> None:
    bench = subparsers.add_parser("unlearning", help="Mem/For/H of several methods over all forget combinations",
                                  description="Runs the ADU protocol: every combination of forgotten "
                                  "domains for each |D_forget| size, each method; prints a table, writes JSON.")
    add_data_arguments(bench)
    add_model_arguments(bench)
    add_method_arguments(bench)
    bench.add_argument("--forget-sizes", default="1", help="comma-separated |D_forget| sizes (default: %(default)s)")
    bench.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (the authors'): H is "
                       "averaged over combinations, then over seeds, with its range (default: --seed)")
    bench.add_argument("--methods", default="zeroshot,baseline,instapg,ddl,adu",
                       help="comma-separated methods (default: %(default)s)")
    bench.add_argument("--out", default="runs/benchmark_unlearning.json", help="JSON report (default: %(default)s)")
    bench.add_argument("--work-dir", default="runs/benchmark_unlearning",
                       help="folder for per-run checkpoints (default: %(default)s)")
    bench.set_defaults(func=benchmark_unlearning_command)

    styles = subparsers.add_parser(
        "styles", help="suppression of illustration styles never trained on (leave one family out)",
        description="For each held-out illustration family (and optionally each forgotten dataset "
        "domain) and each method: train with --rendered on every other family, choose thresholds "
        "on calibration images that never show it, and report the share of its images "
        "suppressed and of correctly classified real photos still reported, for the forgotten-"
        "domain rule and the open-set rule, plus the suppression at 5 %% false suppression. A "
        "reference run trains with no rendered data (every family unseen).")
    add_data_arguments(styles)
    add_model_arguments(styles)
    add_method_arguments(styles)
    add_domain_arguments(styles)
    styles.add_argument("--methods", default="baseline,adu", help="default: %(default)s")
    styles.add_argument("--families", type=csv_list, default=[],
                        help="the rendered families trained on (default: all)")
    styles.add_argument("--held-out-families", type=csv_list,
                        help="families left out in turn (default: every one of --families; '' for none)")
    styles.add_argument("--held-out-domains", type=csv_list, default=[],
                        help="forgotten dataset domains left out in turn (default: none)")
    styles.add_argument("--no-reference", action="store_true",
                        help="skip the reference run trained with no rendered data")
    styles.add_argument("--seeds", help="comma-separated seeds (default: --seed)")
    styles.add_argument("--knn-k", type=int, default=5, help="neighbours of the open-set score (default: %(default)s)")
    styles.add_argument("--texture-zoom", type=int, default=0,
                        help="also score the texture rule, reading crops at this many times the input "
                             "size (2 as `adu export --texture-head`; 0: off, default)")
    styles.add_argument("--texture-artefacts", choices=("on", "off"), default="on",
                        help="fit the texture head on camera-artefact copies too, as `adu export` "
                             "does by default (default: %(default)s)")
    styles.add_argument("--out", default="runs/benchmark_styles.json", help="JSON report; .md and .png beside it")
    styles.add_argument("--work-dir", default="runs/benchmark_styles", help="per-run checkpoints")
    styles.set_defaults(func=benchmark_styles_command)
    merge = subparsers.add_parser("styles-merge", help="merge `styles` reports of parallel runs "
                                  "(e.g. different held-out families) into one table")
    merge.add_argument("reports", nargs="+", help="JSON reports written by `adu benchmark styles`")
    merge.add_argument("--out", required=True, help="merged JSON report; .md and .png beside it")
    merge.set_defaults(func=merge_styles_command)

    balance = subparsers.add_parser(
        "ddl-diagnostics", help="does the Domain Disentangling Loss fit this backbone? (loss "
        "balance, domain entanglement)",
        description="(1) How hard L_memorize, L_forget, gamma*CE_domain and -lambda*MMD^2 pull on "
        "the prompts and InstaPG of a freshly initialised ADU model, averaged over a few training "
        "batches: whether the DDL weights swamp the class losses on this backbone. (2) How well "
        "the frozen CLIP's features already separate the domains (nearest domain centroid "
        "accuracy): ADU's premise is that they are entangled.")
    add_data_arguments(balance)
    add_model_arguments(balance)
    add_method_arguments(balance)
    add_domain_arguments(balance)
    balance.add_argument("--batches", type=int, default=4, help="batches averaged (default: %(default)s)")
    balance.add_argument("--json", help="also write the numbers as JSON here")
    balance.set_defaults(func=ddl_diagnostics_command)
