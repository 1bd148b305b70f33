"""Command line: ``turnpike COMMAND ...``. All printing of the package happens in this package."""
from __future__ import annotations

import argparse
import sys


# command name -> module that defines add_parser(subparsers) and run(args). Every module is
# imported to build the parser, so command modules keep heavy imports (torchdiffeq, cvxpy)
# inside run(): `turnpike spirals` should not pay for them.
COMMANDS = {
    "spirals": "turnpike.cli._spirals",
    "node-spirals": "turnpike.cli._node",
    "mnist": "turnpike.cli._mnist",
    "certify": "turnpike.cli._certify",
    "resnet54": "turnpike.cli._resnet54",
    "resnet54-study": "turnpike.cli._study",
    "hessian": "turnpike.cli._hessian",
    "depth-bounds": "turnpike.cli._bounds",
    "early-exit": "turnpike.cli._early_exit",
}


def main(argv=None) -> int:
    import importlib

    parser = argparse.ArgumentParser(prog="turnpike", description="Turnpikes in residual networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {name: importlib.import_module(path) for name, path in COMMANDS.items()}
    for module in dict.fromkeys(modules.values()):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    from .._allocator import retain_freed_memory
    retain_freed_memory()          # the CLI owns its process: keep freed memory for reuse (see _allocator)
    try:
        return modules[args.command].run(args)
    except ValueError as error:  # bad input: say what is wrong, without a traceback
        print(f"turnpike {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
