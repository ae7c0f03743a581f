"""The measured defaults that every entry point shares: the command line (`attribute`, `sweep`, `budget`,
`export`), the Python API (`AttributionConfig`, `RecoveryConfig`) and the app (`policy.APP_ATTRIBUTION`, the Prune
page's recovery level) all read them from here, so a setting chosen by measurement is changed in one place.

This module imports nothing: the command line's parser reads it without loading torch.
"""
from __future__ import annotations

# Integrated gradients: 2 Gauss-Legendre steps, the cheapest setting whose pruned metric stayed within the 95%
# interval of the 50-step Riemann reference in every measured cell (benchmarks/bench_ig_fidelity.py;
# docs/RESULTS.md, "IG fidelity: steps and quadrature").
IG_STEPS = 2
IG_QUADRATURE = "gausslegendre"
# Captum's approximation methods, the values `AttributionConfig.riemann` (the CLI's --quadrature) accepts.
QUADRATURES = ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right")

# Scoring examples per task, drawn seeded from the train split (the app's and the benchmarks' setting).
SCORING_SAMPLES = 64

# Training-free recovery after pruning: lstsq helped every criterion most (benchmarks/bench_recovery.py;
# docs/RESULTS.md, sections 9 and 9b), fitted on this many unlabeled train texts of the task.
RECOVERY_LEVEL = "lstsq"
RECOVERY_SAMPLES = 1024
# ... and for a causal LM, whose prompts (template + demonstrations) are several times longer than an encoder's
# inputs: the number its LLM quality benchmark fitted lstsq on (benchmarks/llm_quality.py; docs/RESULTS.md, LLM
# quality); the encoder's 1,024 held about 17 GB of activations for SmolLM2-135M on sst2 and fitted four times slower.
LLM_RECOVERY_SAMPLES = 256

# `sweep`'s validation examples: a seeded subset of at most this many, so that a large split (ag_news: 7,600)
# gives its table in minutes; every split of the bundle's smaller tasks fits whole. `--limit all` evaluates the
# whole split.
SWEEP_LIMIT = 1000
