"""One copy of plotly.js per run folder, loaded relatively by every HTML file in it.

plotly.js is about 4.8 MB; a run folder used to carry 29 copies of it (every standalone
figure, notebook, export and the report page). Now the run folder holds one
``plotly.min.js`` and every HTML file in it loads that file by a relative path
(``plotly.min.js`` beside the report and the exports, ``../plotly.min.js`` from
``figures/``), so the folder works offline, copied or moved whole.

- :func:`write_plotlyjs` puts the file into a folder once (rewritten only if plotly's version changed);
- :func:`plotlyjs_tag` is the ``<script>`` that loads it from a page at a given depth;
- :func:`share_plotlyjs` rewrites HTML files that still embed plotly.js inline (an nbconvert
  export of a notebook executed before this module existed) to load the shared copy.

Example:
    >>> write_plotlyjs(run_dir)
    PosixPath('runs/20261203-120000/plotly.min.js')
    >>> plotlyjs_tag("..")
    '<script src="../plotly.min.js" charset="utf-8"></script>'
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..store import atomic_write_text

__all__ = ["PLOTLY_JS", "plotly_banner", "plotlyjs_tag", "share_plotlyjs", "write_plotlyjs"]

PLOTLY_JS = "plotly.min.js"
"""The shared file's name, in the run folder's top level."""


@lru_cache(maxsize=1)
def _plotlyjs() -> str:
    import plotly.offline

    return str(plotly.offline.get_plotlyjs())


def plotly_banner() -> str:
    """The licence comment plotly.js starts with (``/** ... * plotly.js v3.x ...``): one per copy.

    Example:
        >>> plotly_banner().startswith("* plotly.js v")
        True
    """
    found = re.search(r"\* plotly\.js v[\d.]+", _plotlyjs())
    return found.group(0) if found else "* plotly.js v"


def write_plotlyjs(folder: str | Path) -> Path:
    """Write ``folder/plotly.min.js`` unless the same file is already there; return its path.

    Example:
        >>> write_plotlyjs("runs/latest")
        PosixPath('runs/latest/plotly.min.js')
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PLOTLY_JS
    script = _plotlyjs()
    if not path.exists() or path.stat().st_size != len(script.encode("utf-8")):
        atomic_write_text(path, script)
    return path


def plotlyjs_tag(prefix: str = "") -> str:
    """The ``<script>`` that loads the shared plotly.js from a page ``prefix`` folders away.

    Args:
        prefix: the relative folder of the run folder's top level as seen from the page
            (``""`` for a page in the run folder, ``".."`` for one in ``figures/``).

    Example:
        >>> plotlyjs_tag()
        '<script src="plotly.min.js" charset="utf-8"></script>'
    """
    src = f"{prefix.rstrip('/')}/{PLOTLY_JS}" if prefix else PLOTLY_JS
    return f'<script src="{src}" charset="utf-8"></script>'


def share_plotlyjs(run_dir: str | Path) -> list[Path]:
    """Make every HTML file of a run folder load the one shared plotly.js; return the files changed.

    An inline copy (``<script ...>`` + plotly.js + ``</script>``) is replaced by
    :func:`plotlyjs_tag` with the right relative prefix; files already sharing it are
    left alone. ``plotly.min.js`` is written into the folder first.

    Example:
        >>> share_plotlyjs("runs/latest")
        []
    """
    run_dir = Path(run_dir)
    write_plotlyjs(run_dir)
    script = _plotlyjs()
    changed = []
    for path in sorted([*run_dir.glob("*.html"), *run_dir.glob("figures/*.html")]):
        text = path.read_text(encoding="utf-8")
        at = text.find(script)
        if at < 0:
            continue
        start = text.rfind("<script", 0, at)
        end = text.find("</script>", at + len(script))
        if start < 0 or end < 0:
            continue
        prefix = ".." if path.parent != run_dir else ""
        atomic_write_text(path, text[:start] + plotlyjs_tag(prefix) + text[end + len("</script>"):])
        changed.append(path)
    return changed
