"""TaskPrune Studio core: training-free, task-specific pruning of multi-task language models by neuron attribution.

Pipeline, one module per stage: model -> data -> attribution -> masks -> evaluation -> export.
"""
__version__ = "0.1.0"

from .errors import TPError  # noqa: E402
from .model import MultiTaskModel, load_model  # noqa: E402
from . import prompts as _prompts  # noqa: E402,F401  (registers the task bundle's default prompts for causal LMs)

__all__ = ["TPError", "MultiTaskModel", "load_model"]
