"""TaskPrune Studio core: training-free, task-specific pruning of multi-task language models by neuron attribution.

Pipeline, one module per stage: model -> data -> attribution -> masks -> evaluation -> export.
"""
__version__ = "0.1.0"
