"""The baseline every steering method must beat: asking the model (notebook 04's ``prompting`` rows).

AxBench (Wu et al. 2025) found that prompting beats every steering method it tried. The
comparison therefore generates, next to each construction, two conditions with no new
instrument:

- ``prompting``: no vector; the prompt is prefixed with an instruction naming the target;
- ``prompting_steered``: the same instruction, and the mean-centred vector added as usual.

The instruction is the chat template on an instruction-tuned model (a user turn "Write a
fantasy story." and the assistant turn opened with the neutral prompt) and a plain prefix
("The following is a fantasy story.") on a base model; :func:`prompting_style` decides by
the model's name unless told. Completions are scored as every other condition's: the judge
reads only the completion, fluency is its perplexity under the unsteered model *after the
neutral prompt alone*, relevance is the log-prob of the unsteered completion under the
prompted model.
"""

from __future__ import annotations

import re

from ..models import Model
from ..sets import set_word
from .conditions import PROMPTING

__all__ = ["PROMPTING", "PROMPTING_STYLES", "instruction_prefix", "prompting_style"]



PROMPTING_STYLES = ("auto", "chat", "prefix")

_INSTRUCT_NAME = re.compile(r"instruct|chat|(^|[-_])it($|[-_])", re.IGNORECASE)


def prompting_style(model: Model, style: str = "auto") -> str:
    """``"chat"`` or ``"prefix"``: ``style`` as given, or for ``"auto"`` the chat template when the
    tokenizer has one and the model's name says it is instruction-tuned (``instruct``, ``chat``, ``-it``).

    Example:
        >>> prompting_style(model)  # SmolLM2-135M-Instruct
        'chat'
    """
    if style not in PROMPTING_STYLES:
        raise ValueError(f"prompting style {style!r}: expected one of {', '.join(PROMPTING_STYLES)}")
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        raise ValueError(f"prompting style 'chat' needs a chat template; {model.name}'s tokenizer has none")
    if style != "auto":
        return style
    return "chat" if has_template and _INSTRUCT_NAME.search(model.name) else "prefix"


def _describe(target: str) -> str:
    if target == "shakespeare":
        return "a passage in the style of Shakespeare"
    word = set_word(target)
    return f"{'an' if word.strip()[0] in 'aeiou' else 'a'}{word} story"


def instruction_prefix(model: Model, target: str, style: str = "auto") -> str:
    """The text put before a neutral prompt to ask for ``target``; the prompt follows it directly.

    Example:
        >>> instruction_prefix(model, "fantasy", "prefix")
        'The following is a fantasy story.\\n\\n'
    """
    what = _describe(target)
    if prompting_style(model, style) == "prefix":
        return f"The following is {what}.\n\n"
    return str(model.tokenizer.apply_chat_template([{"role": "user", "content": f"Write {what}."}],
                                                   tokenize=False, add_generation_prompt=True))
