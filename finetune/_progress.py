"""What a running command shows: progress bars, and which log lines repeat a result.

Progress bars
-------------

Every long loop of the library (training epochs, prediction, feature
extraction, checks, packing) gets its bar from :func:`progress_bar`. A bar
redraws itself in place, which only a terminal or a notebook can show: written
to a file (``finetune quickstart > log 2>&1``) every redraw becomes another
line, and a training run's log grows to hundreds of kilobytes of bars. So a bar
is drawn only where it redraws in place: in a notebook (tqdm's widget), or when
stderr is a terminal. Elsewhere it is disabled and the loop's log lines (epoch
summaries, "Wrote ..." lines) are the progress.

tqdm itself has ``disable=None`` for "disable on a non-terminal", but it asks
the stream tqdm writes to, which in a notebook is never a terminal; the rule
is written once here instead.

Results in the log
------------------
A library function that returns a report (the bad files of ``check`` and
``pack``, the images ``Predictor`` could not read) also logs it, for callers
who never look at the report. Those records carry :data:`RESULT`; a command
that prints the report itself runs the function inside
:func:`results_printed`, which keeps them off the screen, so each result is
shown once (on stdout) and the log holds progress only.
"""

from __future__ import annotations

import contextlib
import logging
import sys

__all__ = ["RESULT", "progress_bar", "redraws_in_place", "results_printed"]

#: ``extra=`` of a log record that repeats part of the function's return value.
RESULT = {"finetune_result": True}


def _not_a_result(record: logging.LogRecord) -> bool:
    return not getattr(record, "finetune_result", False)


@contextlib.contextmanager
def results_printed():
    """Within the block, log records marked :data:`RESULT` are not shown: the caller prints the result.

    Examples
    --------
    >>> import io, logging
    >>> stream = io.StringIO()
    >>> handler = logging.StreamHandler(stream)
    >>> logging.getLogger().addHandler(handler)
    >>> with results_printed():
    ...     logging.getLogger("finetune.demo").warning("bad file x.png", extra=RESULT)
    >>> logging.getLogger("finetune.demo").warning("bad file y.png", extra=RESULT)
    >>> logging.getLogger().removeHandler(handler)
    >>> print(stream.getvalue(), end="")
    bad file y.png
    """
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(_not_a_result)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_not_a_result)


def redraws_in_place(stream=None) -> bool:
    """Whether a bar can redraw itself in place: a notebook, or ``stream`` (stderr) a terminal.

    Examples
    --------
    >>> import io
    >>> redraws_in_place(io.StringIO())
    False
    """
    from tqdm import autonotebook, std

    if autonotebook.tqdm is not std.tqdm:  # running in a notebook: tqdm draws a widget
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no stream, or a closed one
        return False


def progress_bar(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", show: bool = True,
                 leave: bool = False, **kwargs):
    """A tqdm bar that is drawn only when ``show`` and :func:`redraws_in_place`.

    Parameters
    ----------
    iterable : iterable or None
        What to iterate over (``None``: update the bar by hand).
    total : int or None
        Number of steps (default: ``len(iterable)``).
    desc, unit, leave
        As for ``tqdm``.
    show : bool
        The caller's choice (``progress=False``, a short loop, ``--quiet``);
        even when true, no bar is drawn where it cannot redraw in place.
    **kwargs
        Passed to ``tqdm`` (e.g. ``initial``).

    Returns
    -------
    tqdm.tqdm
        Iterable and usable as a context manager; ``update`` and
        ``set_postfix_str`` do nothing when it is disabled.

    Examples
    --------
    >>> bar = progress_bar(range(3), desc="demo", show=False)
    >>> list(bar), bar.disable
    ([0, 1, 2], True)
    """
    from tqdm.auto import tqdm

    disable = not (show and redraws_in_place())
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable, **kwargs)
