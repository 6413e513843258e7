"""steerlab: measure the residual-stream bias, build mean-centred steering vectors,
read them through a logit lens and steer generation, on nnsight.

Example:
    >>> import steerlab as sl
    >>> model = sl.load_model()                       # embedded SmolLM2-135M-Instruct
    >>> v = sl.build("mean_centred", model, layers=[15], target="fantasy")
    >>> sl.top_tokens(model, v.at(15), k=8)
    >>> sl.generate(model, "Here is a story:", v, coefficients=[0, 0.5])
    >>> with sl.steering(model, v, coefficient=0.5):  # any call of model.hf inside is steered
    ...     out = model.hf.generate(**inputs)
"""

from . import llamacpp  # noqa: F401  registers the ".gguf" vector format with steerlab.vectors
from .arch import ARCHITECTURES, UnsupportedArchitectureError
from .constructions import CONSTRUCTIONS, build, named_sets, set_stats, typical_norm, unit_norm
from .data import DataError, TextSet, genres, load_dataset
from .intervention import Intervention
from .lens import lens_logits, top_tokens, topk_table
from .load import load_model, wrap
from .models import EMBEDDED_MODEL, Model, ModelLoadError
from .stats import ActivationStats, activation_stats, per_text_means
from .steer import (
    OPERATORS,
    Completion,
    SteeringWarning,
    added_vector,
    generate,
    rows,
    steered_generate,
    steered_logits,
    steering,
    steering_rows,
)
from .tokens import STAT_POSITIONS, STEER_POSITIONS, encode
from .vectors import (
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
    "CONSTRUCTIONS",
    "EMBEDDED_MODEL",
    "OPERATORS",
    "STAT_POSITIONS",
    "STEER_POSITIONS",
    "ActivationStats",
    "Completion",
    "DataError",
    "Intervention",
    "Model",
    "ModelLoadError",
    "SteeringVector",
    "SteeringWarning",
    "TextSet",
    "UnsupportedArchitectureError",
    "VectorMismatchError",
    "activation_stats",
    "added_vector",
    "build",
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
    "named_sets",
    "per_text_means",
    "prompt_pair",
    "random_like",
    "raw",
    "rows",
    "set_stats",
    "steered_generate",
    "steered_logits",
    "steering",
    "steering_rows",
    "top_tokens",
    "topk_table",
    "typical_norm",
    "unit_norm",
    "wrap",
]
