"""The canvas and the writer every plot shares: a figure without pyplot state, saved atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from ._file_writes import atomic_open

__all__ = ["figure_format", "new_figure", "save_figure"]

_FORMATS = ("eps", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg", "svgz", "tif", "tiff", "webp")

log = logging.getLogger(__name__)


def new_figure(width: float, height: float):
    """A ``Figure`` of ``width`` x ``height`` inches at 100 dpi on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def figure_format(path) -> str:
    """The image format of a figure file named ``path`` (its suffix); :class:`ConfigError` for one matplotlib cannot write.

    Callers check the name before the work that makes the figure.
    """
    from .errors import ConfigError

    fmt = Path(path).suffix[1:].lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"Cannot write a figure to {str(path)!r}: {('.' + fmt) if fmt else 'no suffix'} is not an "
                          f"image format. Use one of: {', '.join('.' + f for f in _FORMATS)} (e.g. plot.png).")
    return fmt


def save_figure(fig, path):
    """Write ``fig`` to ``path`` atomically (format from the suffix) when ``path`` is given; returns ``fig``."""
    if path is not None:
        path = Path(path)
        fmt = figure_format(path)
        with atomic_open(path) as f:  # matplotlib takes the format from the name; the temporary has none
            fig.savefig(f, format=fmt, dpi=fig.dpi, bbox_inches="tight")
        log.info("Wrote %s", path)
    return fig
