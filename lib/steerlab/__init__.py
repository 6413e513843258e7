"""steerlab: measure the residual-stream bias, build mean-centred steering vectors,
read them through a logit lens and steer generation, on nnsight.

Example:
    >>> import steerlab as sl
    >>> model = sl.load_model()                       # embedded SmolLM2-135M-Instruct
    >>> general = sl.load_dataset("general", "train")
    >>> fantasy = sl.load_dataset("fantasy", "train")
    >>> v = sl.mean_centred(model, fantasy, general, layers=[18])
    >>> sl.top_tokens(model, v.at(18), k=8)
    >>> sl.generate(model, "Here is a story:", v, coefficients=[0, 4])
"""

from .arch import ARCHITECTURES, UnsupportedArchitectureError
from .data import DataError, TextSet, genres, load_dataset
from .lens import lens_logits, top_tokens, topk_table
from .models import EMBEDDED_MODEL, Model, ModelLoadError, load_model
from .stats import ActivationStats, activation_stats, per_text_means
from .steer import Completion, generate, steered_generate, steered_logits
from .tokens import STAT_POSITIONS, STEER_POSITIONS, encode
from .vectors import (
    RECIPES,
    SteeringVector,
    VectorMismatchError,
    counterbalanced,
    isolated,
    load_vector,
    mean_centred,
    prompt_pair,
    random_like,
    raw,
)

__all__ = [
    "ARCHITECTURES",
    "EMBEDDED_MODEL",
    "RECIPES",
    "STAT_POSITIONS",
    "STEER_POSITIONS",
    "ActivationStats",
    "Completion",
    "DataError",
    "Model",
    "ModelLoadError",
    "SteeringVector",
    "TextSet",
    "UnsupportedArchitectureError",
    "VectorMismatchError",
    "activation_stats",
    "counterbalanced",
    "encode",
    "generate",
    "genres",
    "isolated",
    "lens_logits",
    "load_dataset",
    "load_model",
    "load_vector",
    "mean_centred",
    "per_text_means",
    "prompt_pair",
    "random_like",
    "raw",
    "steered_generate",
    "steered_logits",
    "top_tokens",
    "topk_table",
]
