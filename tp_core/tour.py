"""The guided tour's work: one neuron's integrated-gradients path as a job, and the pruning points its steps show,
taken from the Prune page's own curve plan (`policy.curve_plan`), so the tour and the Prune page share every job
and every cached point.

* `neuron_path` / `neuron_path_job`  the integrand of one FFN neuron along alpha on one example (inspector.ig_path)
                                     beside the score the library's `attribute` gives it on that example;
* `top_neuron`                       the highest-scoring FFN neuron of a task's scores (the tour's default neuron);
* `tour_plan`                        the dense point and a method against a baseline at TOUR_SPARSITIES, and the
                                     method's recovered twin at one of them.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .attribution import AttributionConfig, UnitScores, attribute
from .engine import Job, content_key
from .inspector import IG_STEP_CHOICES, UnitRef, ig_path
from .policy import Planned, curve_plan, recovered_method
from .refs import ModelRef, data_identity, get_data, get_model
from .work import Progress, rate_class

TOUR_SPARSITIES = (0.5, 0.7, 0.9)  # FFN sparsities the tour's pruning step compares


def neuron_path(progress: Progress, ref: ModelRef, head: str, data, row: int, unit: UnitRef,
                cfg: AttributionConfig, steps: tuple[int, ...]) -> dict:
    """The path of `unit` on example `row` of `data` (`path`, an inspector.IGPath), and the score the library's
    ig gives it on that example with `cfg`'s rule and steps (`library`), with its rank in its layer."""
    model = get_model(ref)
    one = get_data(data).subset([int(row)])
    progress(0.05, f"{unit.label()}: the integrand along alpha")
    path = ig_path(model, head, one, unit, cfg, steps)
    progress(0.7, "the library's ig scores of this example")
    lib = attribute(model, head, replace(cfg, method="ig", samples=1, units="ffn"), data=one, use_cache=False)
    layer = np.asarray(lib.ffn[unit.layer], dtype=np.float64)
    return {"path": path, "library": float(layer[unit.index]), "rank": int((layer > layer[unit.index]).sum()) + 1,
            "layer_size": len(layer), "text": one.texts[0], "pair": None if one.pairs is None else one.pairs[0],
            "label": one.labels[0]}


def neuron_path_job(model, ref: ModelRef, head: str, data, row: int, unit: UnitRef, cfg: AttributionConfig,
                    steps: tuple[int, ...] = IG_STEP_CHOICES) -> Job:
    """`neuron_path` as a job, keyed by the model, task, example, neuron, settings and step counts."""
    steps = tuple(sorted(set(int(s) for s in steps)))
    key = content_key("ig_path", ref, head, data_identity(data), int(row), unit, cfg, steps)
    return Job("ig_path", neuron_path, (ref, head, data, int(row), unit, cfg, steps), key,
               f"ig path · {unit.label()} · {head}", units=float(2 * sum(steps) + 33),
               rate_key=f"ig_path{rate_class(model)}")


def top_neuron(scores: UnitScores) -> UnitRef | None:
    """The FFN neuron with the highest score (None without FFN scores)."""
    if not scores.ffn:
        return None
    best = max(((float(np.max(s)), l, int(np.argmax(s))) for l, s in enumerate(scores.ffn) if len(s)),
               default=None)
    return None if best is None else UnitRef("ffn", best[1], best[2])


def tour_plan(model, ref: ModelRef, head: str, cfg: AttributionConfig, baseline: str,
              stages: list[tuple[object, int]], known: dict | None = None, scoring_data=None,
              task_label: str | None = None, recovery: str | None = None,
              recovered_at: float | None = None) -> list[Planned]:
    """The Prune page's plan (`curve_plan`, global allocation, no head pruning) for `cfg.method` against
    `baseline`, kept to the dense point, the scores and TOUR_SPARSITIES; with `recovery`, also `cfg.method`'s
    recovered point at `recovered_at` (the same jobs the Prune page's "+ recovery" runs)."""
    methods = [cfg.method] + ([baseline] if baseline != cfg.method else [])
    plan, _, _ = curve_plan(model, ref, head, cfg, methods, 0.0, "global", stages, TOUR_SPARSITIES, known=known,
                            scoring_data=scoring_data, task_label=task_label, recovery=recovery)
    twin = None if recovery is None else recovered_method(cfg.method, recovery)
    wanted = {round(s, 4) for s in TOUR_SPARSITIES}

    def keep(p: Planned) -> bool:
        if p.stage < 0 or p.method is None:
            return True
        if p.method == twin:
            return recovered_at is not None and round(p.sparsity, 4) == round(recovered_at, 4)
        return p.method in methods and round(p.sparsity, 4) in wanted

    return [p for p in plan if keep(p)]


def export_trade(model, head: str, scores: UnitScores, sparsities=TOUR_SPARSITIES, seq_len: int = 128) -> list[dict]:
    """What an export at each FFN sparsity (global allocation, every head kept) holds, counted without building it:
    parameters (the Export page's count, word embeddings included), float32 weights in MB (4 bytes a parameter)
    and the blocks' matrix-multiply FLOPs per example of `seq_len` tokens, each also as a share of dense."""
    from .budget import flops_fraction
    from .export import planned_counts
    from .masks import PruneConfig, build_masks

    rows = []
    for s in sparsities:
        pcfg = PruneConfig(float(s), 0.0, "global")
        counts = planned_counts(model, head, scores, pcfg)
        flops = flops_fraction(model, build_masks(scores, pcfg, model.unit_shape()), seq_len)
        rows.append({"sparsity": float(s), "params": counts["kept"], "dense_params": counts["dense"],
                     "params_share": counts["kept"] / counts["dense"], "float32_mb": 4 * counts["kept"] / 1e6,
                     "dense_float32_mb": 4 * counts["dense"] / 1e6, "flops_share": flops})
    return rows
