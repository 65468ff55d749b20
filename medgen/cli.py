"""The `medgen` command line: `medgen generate`, `medgen evaluate`, `medgen downstream`, `medgen space build`,
`medgen train`.

Each command lives in its own module exposing `add_parser(subparsers)` and `run(args)`;
heavy libraries are imported inside `run`, so `medgen --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "medgen.commands.generate",
    "medgen.commands.evaluate",
    "medgen.commands.space",
    "medgen.commands.train",
    "medgen.commands.downstream",
    "medgen.commands.prepare_data",
    "medgen.commands.models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medgen",
        description="Synthetic medical images with diffusion pipelines (research and teaching only, not for diagnosis).",
    )
    from medgen import __version__

    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (ValueError, OSError) as error:
        # User errors (bad paths, unknown labels, out-of-range values, a full disk or an unwritable output
        # folder) get one clear line naming the input, no traceback; `--verbose` shows it where a command has it.
        if getattr(args, "verbose", False):
            raise
        print(f"medgen {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
