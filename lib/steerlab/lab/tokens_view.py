"""HTML views of tokens for notebooks and the widget: readable token strings and a
per-token colouring by value (a diverging scale: blue below zero, red above, the exact
value on hover).

``display(HTML(tokens_html(token_projections(model, text, v, 15))))`` shows in any
notebook how far each token's residual points along a steering direction.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence

__all__ = ["readable_token", "tokens_html"]


# Characters a reader cannot see, or that act on the text around them: controls (NUL, ESC, which a
# terminal runs as commands), format characters (right-to-left overrides, zero-width joiners), lone
# surrogates. Byte-level vocabularies hold tokens of each; they are shown escaped.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _visible(token: str, keep: str = "") -> str:
    """``token`` with every hidden character (:data:`_HIDDEN`) but those in ``keep`` written as its escape."""
    return "".join(repr(c)[1:-1] if c not in keep and unicodedata.category(c) in _HIDDEN else c for c in token)


def readable_token(token: str) -> str:
    """A token as a reader can see it: whitespace-only tokens as ``repr`` (``'\\xa0'``,
    ``'\\n\\n'``); otherwise a space shown as ``␣``, a newline as ``\\n``, and any other
    control or format character escaped (``\\x00``, ``\\x1b``, ``\\u202e``).

    Example:
        >>> readable_token(" dragon"), readable_token("\\n"), readable_token("a\\nb"), readable_token("a\\x00")
        ('␣dragon', "'\\\\n'", 'a\\\\nb', 'a\\\\x00')
    """
    if not token.strip():
        return repr(token)
    return _visible(token.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t"))


def _colour(value: float, scale: float) -> str:
    """Diverging colour: white at 0, red (positive) or blue (negative) at ``|value| >= scale``."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = round(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def tokens_html(pairs: Sequence[tuple[str, float]], *, scale: float | None = None, title: str = "",
                skip_first_in_scale: bool = True) -> str:
    """``(token, value)`` pairs as one line of coloured spans, each value on hover (``title``).

    Tokens keep their own spaces; a newline shows as ``\\n`` and breaks the line; a
    whitespace-only token shows as its ``repr``.

    Args:
        scale: ``|value|`` that gets the full colour; default the largest ``|value|`` over the
            tokens, leaving out the first token when ``skip_first_in_scale`` (SmolLM2's first
            token is an attention sink whose value dwarfs the rest; it is still shown,
            its colour clipped).
        title: a heading shown above the tokens.

    Example:
        >>> tokens_html([("The", -1.0), (" dragon", 4.0)])
        '<div class="steerlab-token-view">...'
    """
    values = [abs(v) for _, v in pairs]
    if scale is None:
        pool = values[1:] if skip_first_in_scale and len(values) > 1 else values
        scale = max(pool, default=0.0)
    spans = []
    for token, value in pairs:
        shown = html.escape(_visible(token, keep="\n\t") if token.strip() else readable_token(token))
        shown = shown.replace("\n", "\\n<br>")
        strong = scale > 0 and abs(value) / scale > 0.6  # white text on the darkest colours
        spans.append(f"<span class='steerlab-token' data-value='{value:.6g}' title='{value:+.3f}' "
                     f"style='background:{_colour(value, scale)};{'color:#fff;' if strong else ''}"
                     f"white-space:pre-wrap;border-radius:2px'>{shown}</span>")
    head = f"<b>{html.escape(title)}</b> " if title else ""
    legend = (f"<span style='color:#666;font-size:90%'>(blue: negative, red: positive; full colour at "
              f"|value| &ge; {scale:.3g}; hover a token for its value)</span>")
    return (f"<div class='steerlab-token-view' style='line-height:1.7;overflow-wrap:anywhere'>{head}{legend}"
            f"<br>{''.join(spans)}</div>")
