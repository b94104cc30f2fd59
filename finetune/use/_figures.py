"""The canvas and the writer every plot shares: a figure without pyplot state, saved atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from .._atomic import atomic_open

__all__ = ["new_figure", "save_figure"]

log = logging.getLogger(__name__)


def new_figure(width: float, height: float):
    """A ``Figure`` of ``width`` x ``height`` inches at 100 dpi on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """Write ``fig`` to ``path`` atomically (format from the suffix) when ``path`` is given; returns ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:  # matplotlib takes the format from the name; the temporary has none
            fig.savefig(f, format=path.suffix[1:].lower() or None, dpi=fig.dpi, bbox_inches="tight")
        log.info("Wrote %s", path)
    return fig
