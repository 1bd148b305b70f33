"""Command line: ``turnpike COMMAND ...``. All printing of the package happens in this package.

One error path: every expected failure (a bad argument, a missing, corrupt or foreign file, an
output that cannot be written, a missing optional package) ends with one line
``turnpike COMMAND: error: ARGUMENT-OR-PATH: expected ..., got ...`` on stderr and exit status 2;
a traceback means a bug. The library raises ``ValueError`` naming its own argument (a config
field such as ``time_limit_s``); :func:`_flag_names` turns that into the flag the user typed.
"""
from __future__ import annotations

import argparse
import re
import sys


# command name -> module that defines add_parser(subparsers) and run(args). Every module is
# imported to build the parser, so command modules keep heavy imports (torchdiffeq, cvxpy)
# inside run(): `turnpike spirals` should not pay for them. A module may define FLAGS, the
# config fields whose flag is not the field's name with dashes ({"train_subset": "--subset"}).
COMMANDS = {
    "spirals": "turnpike.cli._spirals",
    "node-spirals": "turnpike.cli._node",
    "mnist": "turnpike.cli._mnist",
    "certify": "turnpike.cli._certify",
    "resnet54": "turnpike.cli._resnet54",
    "resnet54-study": "turnpike.cli._study",
    "train": "turnpike.cli._train",
    "train-study": "turnpike.cli._train_study",
    "hessian": "turnpike.cli._hessian",
    "depth-bounds": "turnpike.cli._bounds",
    "early-exit": "turnpike.cli._early_exit",
    "prune": "turnpike.cli._prune",
}

#: optional packages a command may need, and how to get each
_OPTIONAL = {"cvxpy": "pip install cvxpy", "torchdiffeq": "pip install torchdiffeq",
             "tensorboard": "pip install tensorboard", "matplotlib": "pip install matplotlib"}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help (from the config, where it is defined once); none for
    switches and options without one."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: ``--epoch`` is refused with a suggestion, never taken for ``--epochs``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _unknown_option(extras: list, command_parser) -> str:
    """The one-line error of options the command does not have, with the nearest one it has."""
    import difflib

    typed = next((e for e in extras if e.startswith("-")), extras[0]).split("=")[0]
    options = [o for action in command_parser._actions for o in action.option_strings]
    nearest = difflib.get_close_matches(typed, options, n=1, cutoff=0.6)
    hint = f" (did you mean {nearest[0]}?)" if nearest else f" (see {command_parser.prog} --help)"
    kind = "an unknown option" if typed.startswith("-") else "an extra argument"
    return f"{typed}: expected an option of {command_parser.prog}{hint}, got {kind}"


def _parser():
    import importlib

    from ._args import integer, number

    parser = _Parser(prog="turnpike", description="Turnpikes in residual networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = {name: importlib.import_module(path) for name, path in COMMANDS.items()}
    for module in dict.fromkeys(modules.values()):
        module.add_parser(sub)
    for command_parser in sub.choices.values():
        command_parser.formatter_class = _Formatter
        for action in command_parser._actions:
            # int/float say "invalid int value": ours say what was expected
            action.type = {int: integer, float: number}.get(action.type, action.type)
            if action.help is None and action.default not in (None, False) and action.option_strings:
                action.help = "(default: %(default)s)"
    return parser, sub.choices, modules


def _flag_names(message: str, command_parser, module) -> str:
    """``time_limit_s: expected ...`` -> ``--time-limit: expected ...``: the error names the flag
    the user typed where the library named a config field (or a parameter) behind it."""
    match = re.match(r"([a-z_][a-z0-9_]*)(\[[^\]]*\])?: ", message)
    if match is None:
        return message
    field = match.group(1)
    flags = {action.dest: action.option_strings[0] if action.option_strings else action.dest.upper()
             for action in command_parser._actions if action.dest != "help"}
    flag = getattr(module, "FLAGS", {}).get(field) or flags.get(field) or flags.get(field.removesuffix("_s"))
    return message if flag is None else flag + (match.group(2) or "") + message[len(field + (match.group(2) or "")):]


def _expected_failure(error: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (a traceback then)."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, ModuleNotFoundError) and error.name in _OPTIONAL:
        return (f"{error.name}: expected the optional package installed ({_OPTIONAL[error.name]}), "
                f"got it missing")
    if isinstance(error, OSError):          # an output that cannot be written, a file that cannot be read
        path = error.filename or "file system"
        return f"{path}: expected a file or folder this process can use, got: {error.strerror or error}"
    return None


def main(argv=None) -> int:
    parser, command_parsers, modules = _parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            command_parsers[args.command].error(_unknown_option(extras, command_parsers[args.command]))
    except SystemExit as stop:     # --help (0) or argparse's one-line usage error (2): a status, as below
        return stop.code if isinstance(stop.code, int) else 2
    from .._allocator import retain_freed_memory
    retain_freed_memory()          # the CLI owns its process: keep freed memory for reuse (see _allocator)
    try:
        return modules[args.command].run(args)
    except KeyboardInterrupt:      # a command without a graceful stop (those with one return 130 themselves)
        print(f"turnpike {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:     # noqa: BLE001 (re-raised unless expected)
        message = _expected_failure(error)
        if message is None:
            raise
        message = _flag_names(" ".join(message.split("\n")), command_parsers[args.command], modules[args.command])
        print(f"turnpike {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
