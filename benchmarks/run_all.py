"""Run every benchmark and write docs/RESULTS.md, docs/results.json and docs/*.png.

    make bench          # full run on the demo model (.venv/bin/python benchmarks/run_all.py)
    make bench-quick    # small settings on demo-quick, a few minutes (--quick)

The standalone benchmarks (bench_budget.py, bench_pipelines.py, ...) merge their sections into docs/results.json
with --merge; this script keeps them and renders them.

Options: --quick; --sections quality,speed,textpruner (default: all); --report-only (re-render the report from
docs/results.json). The quick mode writes to docs/quick/ so it never overwrites the committed full-run results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common import DOCS, Bench, Settings, machine, settings_dict  # noqa: E402

SECTIONS = ("quality", "speed", "textpruner")


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if x != x else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def top_level(res: dict) -> dict:
    """The headline numbers the issue asks for, each taken from this run's tables."""
    q, sp, tp = res.get("quality", {}), res.get("speed", {}), res.get("textpruner", {})
    exp = next((r for r in sp.get("export", {}).get("rows", [])
                if r["ffn_sparsity"] == 0.5 and r["head_sparsity"] == 0.5), {})
    return {
        "ig_speedup_vs_captum": sp.get("captum", {}).get("ratio"),
        "ig_spearman_vs_captum": sp.get("captum", {}).get("spearman"),
        "export_speedup_50_50": exp.get("throughput_speedup"),
        "export_flops_ratio_50_50": exp.get("flops_ratio"),
        "slider_cached_s": sp.get("interactive", {}).get("slider_cached_s"),
        "slider_new_point_s": sp.get("interactive", {}).get("slider_new_point_s"),
        "ig_keep_ratio_50": q.get("ig_keep_ratio_50"),
        "ig_win_rate": q.get("vs_baselines", {}).get("ig_beats_every_baseline", {}).get("rate"),
        "ig_minus_textpruner_70": tp.get("ig_minus_textpruner_70"),
        "ood_ig_minus_best_baseline_70": q.get("ood", {}).get("mean_ig_minus_best_baseline_70"),
    }


# what this script computes itself: its sections and the headline keys top_level() derives from them
OWN_SECTIONS = ("quality", "textpruner", "speed")


def carried(path: Path, sections: list[str]) -> dict:
    """What results.json holds from the other benchmarks (bench_ig_fidelity, bench_export, bench_interactive,
    bench_recovery, bench_budget, bench_pipelines, ...) and from the sections this run skips: kept as it is, with
    its metadata."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    own = {*OWN_SECTIONS, *top_level({}), "meta"}
    out = {k: v for k, v in old.items() if k not in own}
    out.update({k: old[k] for k in OWN_SECTIONS if k not in sections and k in old})
    if "interactive" in old.get("meta", {}):
        out["meta_interactive"] = old["meta"]["interactive"]
    return out


def git_state() -> dict:
    """Commit of the checkout and whether tp_core / benchmarks had uncommitted changes when the run started."""
    import subprocess

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "tp_core", "benchmarks").splitlines()}


def load_or_build_model(s: Settings, log):
    from tp_core.demo import build_demo
    from tp_core.model import load_model
    from tp_core.errors import TPError

    try:
        return load_model(s.model)
    except TPError:
        log(f"{s.model} is not built yet: building it now "
            f"(python -m tp_core build-demo{' --quick' if s.mode == 'quick' else ''})")
        build_demo(quick=s.mode == "quick", progress=lambda f, m: None)
        return load_model(s.model)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small settings on demo-quick (under 10 minutes)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--report-only", action="store_true", help="re-render RESULTS.md and plots from the JSON")
    ap.add_argument("--rerun-speed", action="store_true",
                    help="re-measure the Captum comparison and pruned-model speed into the existing results.json "
                         "(for a quiet machine; attribution times and all quality numbers are kept)")
    ap.add_argument("--refresh-interactive", action="store_true",
                    help="with --report-only: take the slider latency from a newer benchmarks/bench_interactive.py run")
    ap.add_argument("--refresh-ig-fidelity", nargs="?", const=str(HERE / "out" / "ig_fidelity.json"), default=None,
                    metavar="JSON", help="with --report-only: take the IG fidelity section (key ig_fidelity) from a "
                                         "benchmarks/bench_ig_fidelity.py result "
                                         "(default benchmarks/out/ig_fidelity.json)")
    ap.add_argument("--out", default=None, help="output folder (default docs/, or docs/quick/ with --quick)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out) if args.out else (DOCS / "quick" if args.quick else DOCS)
    out_dir.mkdir(parents=True, exist_ok=True)
    import report

    if args.report_only:
        res = json.loads((out_dir / "results.json").read_text())
        if args.refresh_ig_fidelity:
            res["ig_fidelity"] = _jsonable(json.loads(Path(args.refresh_ig_fidelity).read_text()))
            (out_dir / "results.json").write_text(json.dumps(res, indent=1))
        if args.refresh_interactive:
            import bench_speed

            bench = type("B", (), {"s": type("S", (), {"model": res["meta"]["settings"]["model"]})()})()
            res["speed"]["interactive"] = bench_speed.interactive(bench)
            res["meta"]["interactive_refreshed"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            res.update(top_level(res))
            res = _jsonable(res)
            (out_dir / "results.json").write_text(json.dumps(res, indent=1))
        report.write(res, out_dir)
        return 0

    import torch

    torch.manual_seed(0)
    s = Settings.quick() if args.quick else Settings.full()
    if args.rerun_speed:
        return rerun_speed(s, out_dir, args)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    t_start = time.time()
    cmd = "make bench-quick" if args.quick else "make bench"
    if args.sections != ",".join(SECTIONS):
        cmd += f" (benchmarks/run_all.py {' '.join(sys.argv[1:])})"
    res = {"meta": {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                    "git": git_state(), "settings": settings_dict(s), "section_seconds": {}}}
    keep = carried(out_dir / "results.json", sections)
    if "meta_interactive" in keep:  # bench_interactive.py's run metadata
        res["meta"]["interactive"] = keep.pop("meta_interactive")
    res.update(keep)
    b = Bench(s, None)
    b.model = load_or_build_model(s, b.log)
    b.log(f"model {s.model} loaded; tasks {list(b.model.tasks)}")
    res["meta"]["model_tasks"] = list(b.model.tasks)
    res["meta"]["dense_all_tasks"] = {}
    for task in b.model.tasks:  # dense metric of every demo task on the capped validation subset
        data = b.eval_data(task)
        res["meta"]["dense_all_tasks"][task] = {"metric_name": data.spec.metric, "metric": b.dense(task),
                                                "n": len(data)}
    import bench_quality
    import bench_speed
    import bench_textpruner

    runners = {"quality": lambda: bench_quality.run(b), "textpruner": lambda: bench_textpruner.run(b),
               "speed": lambda: bench_speed.run(b, res.get("quality"))}
    for name in ("quality", "textpruner", "speed"):
        if name in sections:
            t0 = time.time()
            res[name] = runners[name]()
            res["meta"]["section_seconds"][name] = time.time() - t0
            b.log(f"{name} done in {time.time() - t0:.0f}s")
            save(res, out_dir, t_start, partial=True)
    if "quality" in sections:  # the dearest study last, so everything else is on disk first
        t0 = time.time()
        res["quality"]["low_resource"] = bench_quality.low_resource(b)
        res["meta"]["section_seconds"]["low_resource"] = time.time() - t0
    res = save(res, out_dir, t_start, partial=False)
    b.log(f"wrote {out_dir / 'RESULTS.md'} and {out_dir / 'results.json'} in {res['meta']['total_seconds']:.0f}s")
    return 0


def rerun_speed(s, out_dir: Path, args) -> int:
    """Re-measure the timing-sensitive speed parts (Captum comparison, pruned-model speed, slider latency) into an
    existing results.json, with their own date and load average in the report."""
    import bench_speed
    import report

    res = json.loads((out_dir / "results.json").read_text())
    load_start = list(os.getloadavg())
    b = Bench(s, None)
    b.model = load_or_build_model(s, b.log)
    res["speed"]["captum"] = bench_speed.captum_compare(b)
    res["speed"]["export"] = bench_speed.export_speed(b)
    res["speed"]["interactive"] = bench_speed.interactive(b)
    res["meta"]["speed_rerun"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "command": "benchmarks/run_all.py " + " ".join(sys.argv[1:]),
                                  "loadavg_start": load_start, "loadavg_end": list(os.getloadavg())}
    res.update(top_level(res))
    res = _jsonable(res)
    _write_json(out_dir / "results.json", res)
    report.write(res, out_dir)
    b.log(f"speed re-measured into {out_dir / 'results.json'}")
    return 0


def save(res: dict, out_dir: Path, t_start: float, partial: bool) -> dict:
    """Write results.json + RESULTS.md + plots (also after each section, marked partial, so a cut run leaves data)."""
    import report

    res["meta"]["total_seconds"] = time.time() - t_start
    res["meta"]["partial"] = partial
    res["meta"]["machine"]["loadavg_end"] = list(os.getloadavg())
    res = _jsonable({**top_level(res), **res})
    _write_json(out_dir / "results.json", res)
    report.write(res, out_dir)
    return res


def _write_json(path: Path, doc: dict) -> None:
    """Atomically: a run stopped mid-write never leaves a half-written results.json."""
    from tp_core.paths import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1))


if __name__ == "__main__":
    sys.exit(main())
