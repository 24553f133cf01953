"""The `jaxattr` command. Each subcommand lives in `jaxattr/commands/<name>.py` (the demo in `jaxattr/demo.py`)
with two functions:
`add_arguments(parser)` and `run(args) -> int`. Modules are imported lazily so `--help` is fast.

User mistakes raise `jaxattr.errors.UserError`; they are printed as one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxattr.errors import UserError

COMMANDS: dict[str, str] = {
    "predict": "label and probabilities for a text",
    "convert": "HF checkpoint directory -> jaxattr checkpoint",
    "export": "jaxattr checkpoint -> HF directory",
    "attribute": "token attributions for texts or a dataset (SIG, IG, IBA, ...)",
    "merge": "join the --shard K/N jobs of an attribute OUT into OUT",
    "train": "fine-tune (plain, AD-DROP, DACT, DeeBERT)",
    "evaluate": "faithfulness metrics and degradation tables for attribution methods",
    "degradation": "the IBA paper's degradation test for a set of methods",
    "demo": "fine-tune MiniLM on tweets and explain a few predictions (the main job)",
}


MODULES: dict[str, str] = {"demo": "jaxattr.demo"}  # the demo is its own layer; the rest are commands/


def _module(name: str):
    return importlib.import_module(MODULES.get(name, f"jaxattr.commands.{name}"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="jaxattr", description="Attribution for BERT-family encoders in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            _module(name).add_arguments(p)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled XLA programs in the jaxattr cache directory (or set "
                             "JAXATTR_COMPILE_CACHE=0)")
    args = parser.parse_args(argv)
    try:
        if not args.no_compile_cache:
            from jaxattr.models.loading import enable_compilation_cache

            enable_compilation_cache()
        from jaxattr.models.precision import matmul_precision

        with matmul_precision(getattr(args, "matmul_precision", "default")):
            return int(_module(args.command).run(args) or 0)
    except UserError as e:
        print(f"jaxattr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"jaxattr {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
