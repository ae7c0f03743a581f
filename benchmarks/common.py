"""Shared settings and helpers of the benchmark scripts (see run_all.py).

Every number in docs/RESULTS.md comes from a `Bench` run: the settings below (full or --quick) are written into
docs/results.json beside the numbers, so the tables can say what produced them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tp_core.attribution import DATA_FREE, AttributionConfig, UnitScores, attribute  # noqa: E402
from tp_core.data import TaskData, get_task, load_split  # noqa: E402
from tp_core.evaluation import evaluate  # noqa: E402
from tp_core.masks import PruneConfig, UnitMasks, build_masks  # noqa: E402

DOCS = ROOT / "docs"
METHODS = ("ig", "grad_x_act", "activation", "magnitude", "random")
# The quadrature of `make bench`'s ig (the paper's replication, reported as Riemann midpoints): kept explicitly, not
# taken from AttributionConfig's default (tp_core/defaults.py), so the tables keep meaning what they say.
RIEMANN = "riemann_middle"
BASELINES = ("grad_x_act", "activation", "magnitude", "random")


@dataclass
class Settings:
    """What one benchmark run measures. `full()` is `make bench`; `quick()` is `make bench-quick`."""

    mode: str
    model: str
    grid_tasks: tuple[str, ...]  # tasks of the pruning-quality grid
    eval_cap: int  # validation examples per task (seeded subset) for every metric in the grid
    samples: int  # N scoring examples for data-driven methods
    steps: int  # IG Riemann steps
    max_length: int = 64  # tokens per example for scoring and evaluation (the demo model is trained at 64)
    ffn_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    head_grid: tuple[float, ...] = (0.25, 0.5, 0.75)
    combined_grid: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.7, 0.5))
    summary_points: tuple[tuple[float, float], ...] = ((0.5, 0.0), (0.7, 0.0), (0.9, 0.0), (0.0, 0.5), (0.5, 0.5))
    random_extra_points: tuple[tuple[float, float], ...] = ((0.5, 0.0), (0.7, 0.0), (0.9, 0.0))  # seeds 1, 2
    random_seeds: tuple[int, ...] = (0, 1, 2)
    low_resource_tasks: tuple[str, ...] = ("trec", "cr")
    low_resource_n: tuple[int, ...] = (8, 32, 128, 512)
    low_resource_steps: int = 8
    unsup_tasks: tuple[str, ...] = ("sst2", "ag_news", "trec")
    ood_cap: int = 250  # examples per domain
    captum_samples: int = 16
    captum_steps: int = 16
    export_points: tuple[tuple[float, float], ...] = ((0.5, 0.0), (0.5, 0.5), (0.7, 0.5), (0.9, 0.75))
    throughput_reps: int = 3
    latency_reps: int = 20
    tp_gap_task: str = "sst2"
    tp_gap_more: int = 2  # "more examples" variant: this many times `samples`
    tp_gap_all_variants: bool = True
    interactive_n: int = 500

    @staticmethod
    def full() -> Settings:
        return Settings(mode="full", model="demo", grid_tasks=("sst2", "ag_news", "trec"),
                        eval_cap=120, samples=32, steps=12, ood_cap=150, captum_samples=64, captum_steps=12)

    @staticmethod
    def quick() -> Settings:
        return Settings(mode="quick", model="demo-quick", grid_tasks=("sst2", "ag_news"), eval_cap=48, samples=8,
                        steps=4, ffn_grid=(0.5, 0.7, 0.9), head_grid=(0.5,), combined_grid=((0.5, 0.5),),
                        low_resource_tasks=("sst2",), low_resource_n=(4, 8, 16), low_resource_steps=4,
                        unsup_tasks=("sst2", "ag_news"), ood_cap=24, tp_gap_all_variants=False, captum_samples=4,
                        captum_steps=4,
                        export_points=((0.5, 0.5),), throughput_reps=1, latency_reps=3, interactive_n=100)


def merge_results(path: Path, updates: dict, replaces: tuple[str, ...] = ()) -> None:
    """Put `updates` into a results.json (created if missing), written atomically: a run stopped mid-write never
    leaves a half-written file. Keys in `replaces` but not in `updates` are removed: a benchmark's keys then all
    come from the run merged, never some from an earlier run with other settings."""
    import json

    from tp_core.paths import atomic_write_text

    doc = json.loads(path.read_text()) if path.is_file() else {}
    for key in replaces:
        if key not in updates:
            doc.pop(key, None)
    doc.update(updates)
    atomic_write_text(path, json.dumps(doc, indent=1))
    print(f"merged into {path}")


def run_tasks(tasks: str, run_task, summarise, meta: dict, out_path: Path, t0: float) -> dict:
    """A per-task benchmark's main loop: `run_task(task)` for each comma-separated task, the whole result (meta,
    tasks, `summarise(tasks)`, seconds) rewritten to `out_path` after every task, so a stopped run keeps what it
    measured; returns that result."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done: dict = {}
    res: dict = {"meta": meta, "tasks": done}
    for task in [t for t in tasks.split(",") if t]:
        done[task] = run_task(task)
        res = {"meta": meta, "tasks": done, "summary": summarise(done), "seconds": round(time.time() - t0, 1)}
        out_path.write_text(json.dumps(res, indent=1, default=float))
    res["meta"]["loadavg_end"] = list(os.getloadavg())
    out_path.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res.get("summary"), indent=1))
    return res


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": list(os.getloadavg()),
    }


class Bench:
    """The loaded model plus memoised data, scores and evaluations shared by all sections of one run."""

    def __init__(self, settings: Settings, model):
        self.s = settings
        self.model = model
        self._eval_data: dict = {}
        self._metric: dict = {}
        self._dense: dict = {}
        self.log_t0 = time.time()

    # ----- logging ---------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.log_t0:7.1f}s] {msg}", flush=True)

    # ----- data ------------------------------------------------------------------------------------------------
    def eval_data(self, task: str, cap: int | None = None) -> TaskData:
        cap = cap or self.s.eval_cap
        key = (task, cap)
        if key not in self._eval_data:
            self._eval_data[key] = load_split(task, "validation", limit=cap, seed=0)
        return self._eval_data[key]

    def scoring_data(self, task: str, n: int) -> TaskData:
        spec = get_task(task)
        return load_split(spec, spec.scoring_split, limit=n, seed=0)

    # ----- scores ----------------------------------------------------------------------------------------------
    def scores(self, task: str, method: str, seed: int = 0, units: str = "both", samples: int | None = None,
               steps: int | None = None, use_cache: bool = True, **kw) -> UnitScores:
        n = samples or self.s.samples
        kw.setdefault("riemann", RIEMANN)
        cfg = AttributionConfig(method=method, samples=n, steps=steps or self.s.steps, units=units,
                                seed=seed if method == "random" else 0, max_length=self.s.max_length, **kw)
        data = None if method in DATA_FREE else self.scoring_data(task, n)
        return attribute(self.model, task, cfg, data=data, use_cache=use_cache)

    # ----- evaluation ------------------------------------------------------------------------------------------
    def dense(self, task: str, data: TaskData | None = None, name: str | None = None) -> float:
        data = data if data is not None else self.eval_data(task)
        key = (task, data.spec.name, len(data), tuple(data.rows[:20]), name)
        if key not in self._dense:
            self._dense[key] = evaluate(self.model, task, data, max_length=self.s.max_length).metric
        return self._dense[key]

    def masked(self, task: str, masks: UnitMasks, data: TaskData | None = None) -> float:
        """Metric with the masked units multiplied by 0 (tp_core's hooks); memoised by task, data and masks."""
        data = data if data is not None else self.eval_data(task)
        h = hashlib.sha1()
        for m in masks.ffn + masks.heads:
            h.update(np.packbits(m).tobytes())
        key = (task, data.spec.name, len(data), tuple(data.rows[:20]), h.hexdigest())
        if key not in self._metric:
            self._metric[key] = evaluate(self.model, task, data, masks.gates(self.model.device),
                                         max_length=self.s.max_length).metric
        return self._metric[key]

    def masks(self, scores: UnitScores, ffn: float, heads: float = 0.0, allocation: str = "global") -> UnitMasks:
        return build_masks(scores, PruneConfig(ffn, heads, allocation), self.model.unit_shape())


def keep(metric: float, dense: float) -> float:
    """Metric kept vs dense (ratio); NaN when the dense metric is not positive (e.g. Matthews at 0)."""
    return float(metric / dense) if dense > 0 else float("nan")


def fmt_pct(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{100 * x:.{digits}f}%"


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:.{digits}f}"


def settings_dict(s: Settings) -> dict:
    return asdict(s)
