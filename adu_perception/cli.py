"""The `adu` command line: one tool, one subcommand per job.

Each stage owns a light `commands` module (no torch import at module level) with
`register(subparsers)` for its top-level subcommands and, optionally,
`register_benchmarks(subparsers)` for `adu benchmark <name>`. Heavy imports happen inside
the command functions, so `adu replay --help` works on a torch-free edge image.
"""
import argparse
import importlib
import logging
import sys

from adu_perception import __version__

# Stage modules that contribute subcommands, in the order they appear in `adu --help`.
COMMAND_MODULES = (
    "adu_perception.training.commands",
    "adu_perception.training.stylize_commands",
    "adu_perception.export.commands",
    "adu_perception.ros_node.commands",
    "adu_perception.demo.commands",
)


def _load_command_modules():
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            # A stage whose own module is absent is simply not offered; a missing
            # third-party dependency inside a stage is a real error and propagates.
            if error.name != name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adu",
        description="Approximate Domain Unlearning: train, evaluate, export and run CLIP "
        "prompts that recognise real objects and ignore illustrations of them.",
    )
    parser.add_argument("--version", action="version", version=f"adu {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    benchmark = subparsers.add_parser(
        "benchmark", help="benchmarks that print numbers (unlearning quality, latency, node)")
    benchmark_subparsers = benchmark.add_subparsers(dest="benchmark", metavar="BENCHMARK",
                                                    required=True)
    for module in _load_command_modules():
        module.register(subparsers)
        if hasattr(module, "register_benchmarks"):
            module.register_benchmarks(benchmark_subparsers)
    return parser


class CommandError(Exception):
    """A user-facing failure: printed as one clear line, exit status 2."""


def csv_list(value) -> list:
    """'a, b,,c' -> ['a', 'b', 'c'] (None or '' -> []), for comma-separated options."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _int_at_least(text, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not an integer >= {minimum}")
    return value


def positive_int(text) -> int:
    """argparse type: an integer >= 1 (counts, sizes and limits that 0 or less would empty)."""
    return _int_at_least(text, 1)


def non_negative_int(text) -> int:
    """argparse type: an integer >= 0 (seeds, and counts where 0 means none)."""
    return _int_at_least(text, 0)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # open_clip logs its loading steps on the root logger: keep those at WARNING unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("adu_perception").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        result = args.func(args)
    except (CommandError, OSError, ValueError) as error:  # OSError: a path that cannot be read or written
        if args.verbose:
            raise
        print(f"adu {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    # `python -m adu_perception.cli` runs this file as __main__: call the imported module's
    # main, so that the stages' CommandError is the class main() catches (one line, exit 2).
    from adu_perception.cli import main as package_main
    sys.exit(package_main())
