"""Command line: ``python -m moero <command> --help``.

Each command lives in the module that owns its concern and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this module only dispatches, importing a command's module when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "book": ("moero.book_cli", "run the book's notebooks with papermill for a profile, then build the HTML"),
    "train": ("moero.train_cli", "train a model (YAML config + overrides; torchrun for DDP; --resume continues)"),
    "eval": ("moero.eval_cli", "score a checkpoint by the official CMRxRecon2025 protocol, write CSV/Markdown tables"),
    "generate-data": ("moero.synthetic", "generate the embedded synthetic CMRxRecon-layout dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moero", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
