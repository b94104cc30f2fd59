"""The ``finetune`` command line.

Each stage of the library registers its subcommands from its own module
(``_data``, ``_models``, ``_train``, ``_use``, ``_features``): a module there
defines ``register(subparsers)`` that adds parsers whose ``handler`` default
is a function ``handler(args) -> int``.

Options several commands share (``--ctx``, ``--workers``, ``--batch-size``,
``--seed``, ``--out``, ...) are defined once, in ``_options``, named like the
API parameters they set and with their defaults; renamed spellings stay
accepted as deprecated aliases.

Before anything imports MXNet, :func:`main` sets ``OMP_NUM_THREADS`` to the
number of cores unless the user set it: MXNet's CPU build otherwise uses only
half of them.

SIGTERM (what ``kill``, job schedulers and container runtimes send) is
turned into :class:`Terminated`, a ``KeyboardInterrupt``, so it unwinds the
command exactly as Ctrl-C does: worker pools are stopped, shared memory is
freed, half-written outputs are removed. The command then exits with 130
after Ctrl-C and 143 after SIGTERM, printing one line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading

__all__ = ["build_parser", "console", "main"]

_MODULES = ("_quickstart", "_data", "_models", "_caffe", "_train", "_use", "_features")
log = logging.getLogger("finetune")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (see the module docstring)."""


def _terminated(signum, frame):
    raise Terminated()


def _say(*parts, file=None) -> None:
    """``print`` for names and paths: bytes that are not UTF-8 are shown as ``\\xNN`` escapes, never a
    UnicodeEncodeError."""
    from .._text import shown

    print(*(shown(p) for p in parts), file=file)


def configure_threads(environ=os.environ) -> str:
    """Set ``OMP_NUM_THREADS`` to the core count unless it is set; return a sentence saying so."""
    if environ.get("OMP_NUM_THREADS"):
        return f"Using OMP_NUM_THREADS={environ['OMP_NUM_THREADS']} (set by you)."
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    environ["OMP_NUM_THREADS"] = str(cores)
    return f"Using {cores} threads (OMP_NUM_THREADS unset; set it to override)."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from .._version import __version__
    from ._options import Parser

    parser = Parser(
        prog="finetune",
        description="Transfer learning of image CNNs on Apache MXNet / Gluon.",
    )
    parser.add_argument("--version", action="version", version=f"finetune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def _legacy_flags(parser: argparse.ArgumentParser, argv: list) -> list:
    """Accept ``--flag=true`` / ``--flag=0`` for on/off flags, as older MXNet tools wrote them.

    The seed documents run ``im2rec.py --list=true --recursive=true``; those
    flags took a value in older MXNet releases and are plain switches now.
    """
    if not argv or argv[0].startswith("-"):
        return argv
    sub = parser._subparsers._group_actions[0].choices.get(argv[0]) if parser._subparsers else None
    if sub is None:
        return argv
    switches = {opt for action in sub._actions
                if isinstance(action, argparse._StoreTrueAction) or getattr(action, "kind", None) == "store_true"
                for opt in action.option_strings}
    out = [argv[0]]
    for token in argv[1:]:
        name, eq, value = token.partition("=")
        if eq and name in switches and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            if value.lower() in ("1", "true", "yes", "on"):
                out.append(name)
            continue
        out.append(token)
    return out


def main(argv=None) -> int:
    """Run the ``finetune`` command; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = next((a for a in argv if not a.startswith("-")), "")
    prefix = f"finetune {name}:" if name else "finetune:"
    in_main = threading.current_thread() is threading.main_thread()
    if sys.stdout is None:  # `finetune ... >&-`: Python's print would fail on None with an AttributeError
        sys.stdout = _ClosedOutput()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:  # an interrupt while the subcommands are imported ends as quietly as one while they run
        return _run(argv)
    except Terminated:
        print(f"{prefix} terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


class _ClosedOutput:
    """Standard output the shell closed: writing the command's results there is a :class:`WriteError`."""

    def write(self, text: str) -> int:
        from ..errors import WriteError

        if not text:
            return 0
        raise WriteError("Cannot write the results: standard output is closed. Leave it open, or redirect it to a "
                         "file (> results.txt) or to /dev/null.")

    def flush(self) -> None:
        """Nothing was written."""

    def isatty(self) -> bool:
        return False


def console() -> int:
    """The ``finetune`` command (console script and ``python -m finetune``): :func:`main`, then shut down in peace.

    Once the command is over, a Ctrl-C or ``SIGTERM`` that arrives while
    Python shuts down (MXNet's clean-up takes a moment) is ignored, so the
    exit status stays the command's instead of a death by signal.
    """
    code = main()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


class _PlainFormatter(logging.Formatter):
    """Log lines for people at a terminal: the message, after ``warning:`` / ``error:`` when it is one
    (``--verbose`` shows every record's level and logger)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _run(argv: list) -> int:
    threads = configure_threads()
    parser = build_parser()
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    argv = argv[:command] + _legacy_flags(parser, argv[command:])
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if args.verbose
                         else _PlainFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    if args.command is None:
        parser.print_help()
        return 2
    log.debug(threads)
    from ..errors import FinetuneError

    try:
        _check_working_folder()
        _refuse_output_over_input(args)
        return int(args.handler(args) or 0)
    except FinetuneError as exc:
        _say(f"finetune {args.command}: error: {exc}", file=sys.stderr)  # a name that is not UTF-8 as escapes
        return 1
    except BrokenPipeError:  # `finetune predict ... | head -1`: the reader has what it wanted; end as quietly as cat
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141
    except OSError as exc:  # a path the system refused (permission, a file where a folder goes, ...)
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        why, verb = exc.strerror or exc, "use"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            why = f"the disk is full or a size limit was reached ({why}); free space and run again"
            verb = "write" + ("" if where else " the results")
        _say(f"finetune {args.command}: error: cannot {verb}{where}: {why}", file=sys.stderr)
        return 1


def _check_working_folder() -> None:
    """A working folder deleted under the shell made every relative path fail with a bare "No such file"."""
    try:
        os.getcwd()
    except FileNotFoundError:
        from ..errors import MissingFileError

        raise MissingFileError("The current folder no longer exists (it was deleted or moved); cd to an existing "
                               "folder and run again.") from None


def _refuse_output_over_input(args) -> None:
    """Refuse an ``--out`` that is one of the command's input images (the file given, or one in a folder given).

    Every command reads its inputs from the path arguments; a result written
    over one of them (``check photos --out photos/cat/1.png``, ``gradcam
    model x.png --out x.png``) would destroy the user's image. An ``--out``
    that is an image finetune did not write is refused here too, before the
    work, not only when the result is written.
    """
    from ..data import IMAGE_EXTENSIONS
    from ..errors import OutputExistsError

    out = getattr(args, "out", None)
    if not isinstance(out, str) or not os.path.isfile(out) or not out.lower().endswith(IMAGE_EXTENSIONS):
        return
    for name, value in vars(args).items():
        for given in value if isinstance(value, list) else [value]:
            if name == "out" or not isinstance(given, str) or not os.path.exists(given):
                continue
            folder = os.path.realpath(given)
            if (os.path.samefile(given, out) if os.path.isfile(given)
                    else os.path.isdir(given) and os.path.realpath(out).startswith(folder.rstrip(os.sep) + os.sep)):
                raise OutputExistsError(f"--out {out!r} is one of the images this command reads ({given!r}); "
                                        "writing the result there would destroy it. Give another --out.", out)
    from .._units import refuse_replacing_an_image

    refuse_replacing_an_image(out, out)  # an image finetune did not write (a photo): before any work is done
