"""The Export page's export as jobs: `export_formats` writes every chosen format (with its checks, or without them
for a quick "ready": the files, the card and the zip), `export_check` reads the written files back and measures
them afterwards, writing the card, the report and the zip again with the numbers. The dense metric comes from the
dense point's cache (`work.point`), which the Model page fills."""
from __future__ import annotations

from .engine import Job, content_key
from .masks import PruneConfig
from .attribution import UnitScores
from .recovery import RecoveryConfig
from .refs import ModelRef, get_data, get_model
from .work import Progress, point


def dense_metric(progress: Progress, ref: ModelRef, head: str, data) -> tuple | None:
    """The dense model's (metric, interval) on `data` as the dense point has it (cached on disk: the Model page
    asks for it first), for an export's report; None without data."""
    if data is None:
        return None
    res = point(lambda f, m: progress(0.02 * f, f"the dense metric: {m}"), ref, head, None, None, data)
    return res.record.metric, (res.low, res.high)


def _finish(progress: Progress, rep, model, head: str, out: str, data, reload: bool) -> dict:
    """An Export-page export's result: the report as a dict, the TaskPrune folder (if written, with `reload`)
    reloaded and re-evaluated here, and one zip of everything (stored as it is while checks are pending, for a
    quick "ready"; compressed when it is written again after them)."""
    from pathlib import Path

    from .evaluation import evaluate
    from .export import zip_export
    from .model import load_model

    result = rep.to_dict()
    tp = rep.format("taskprune")
    result["reloaded_metric"] = None
    if reload and tp is not None and data is not None:
        progress(0.9, "reloading the TaskPrune folder")
        reloaded = load_model(tp.path, device=str(model.device))
        result["reloaded_metric"] = evaluate(reloaded, head, data).metric
        result["reloaded_params"] = sum(p.numel() for p in reloaded.encoder.parameters()) + \
            sum(p.numel() for p in reloaded.heads.parameters())
    progress(0.96, "zipping the export")
    legacy_mask = Path(rep.mask_file) if rep.mask_file and not Path(rep.mask_file).is_relative_to(out) else None
    result["zip"] = str(zip_export(out, extra=[legacy_mask] if legacy_mask else (), compress=not rep.pending))
    result["eval_examples"] = rep.eval_examples
    progress(1.0, "verified" if not rep.pending else "written")
    return result


def export_formats(progress: Progress, ref: ModelRef, head: str, unit_scores: UnitScores, pcfg: PruneConfig,
                   out: str, data, formats: tuple, vocab: str, min_count: int, latency: bool, overwrite: bool,
                   command: str, recovery=None, offdomain: bool = True, checks: bool = True, plan=None) -> dict:
    """`export.export_formats` for the Export page: every format measured on `data` (`offdomain`: related tasks
    too, as many examples; the dense metric from the dense point), the TaskPrune folder (if chosen) reloaded and
    re-evaluated here, one zip of everything. `recovery` (a level fitted here, or a Recovery from `recovery_job`)
    is folded into the weights. `checks=False`: the files, card and zip only, the report's `pending` naming what
    `export_check` measures afterwards. `plan`: a `vocab_estimate` result (its task vocabulary, counted before the
    click). Returns the report as a dict plus `reloaded_metric` and `zip`."""
    from .export import export_formats as run

    model = get_model(ref)
    data = get_data(data)
    rep = run(model, head, unit_scores, pcfg, out, list(formats), vocab=vocab, min_count=min_count, eval_data=data,
              offdomain_limit=len(data) if data is not None else None, latency=latency, latency_repeats=10,
              overwrite=overwrite, command=command, progress=lambda f, m: progress(0.88 * f, m),
              recovery=None if recovery is None or recovery == "none" else recovery,
              offdomain=None if offdomain else [], checks=checks,
              dense=dense_metric(progress, ref, head, data) if checks else None, vocab_plan=_plan(plan))
    return _finish(progress, rep, model, head, out, data, checks)


def _plan(estimate) -> object:
    """The `vocab.VocabPlan` of a `vocab_estimate` result (None without one)."""
    return estimate.get("plan") if isinstance(estimate, dict) else None


def export_check(progress: Progress, written: dict, ref: ModelRef, head: str, unit_scores: UnitScores,
                 pcfg: PruneConfig, data, latency: bool, recovery=None, offdomain: bool = True, plan=None) -> dict:
    """The checks of an export that `export_formats(..., checks=False)` wrote (`written`, its result): every
    format read back and measured (`export.check_formats`), the card and report written again, the TaskPrune
    folder reloaded, the zip made again (`plan`: as for `export_formats`). Returns what `export_formats` with its
    checks returns."""
    from .export import check_formats

    model = get_model(ref)
    data = get_data(data)
    out = written["out_dir"]
    rep = check_formats(model, head, unit_scores, pcfg, out, data,
                        offdomain=None if offdomain else [], offdomain_limit=len(data) if data is not None else None,
                        latency=latency, latency_repeats=10, progress=lambda f, m: progress(0.88 * f, m),
                        recovery=None if recovery is None or recovery == "none" else recovery,
                        dense=dense_metric(progress, ref, head, data), vocab_plan=_plan(plan))
    return _finish(progress, rep, model, head, out, data, True)


# ----- job builders (client side) ---------------------------------------------------------------------------------
def export_formats_job(ref: ModelRef, head: str, scores: Job | UnitScores, pcfg: PruneConfig, out: str, data,
                       formats, vocab: str, min_count: int, latency: bool, overwrite: bool, command: str, n: int,
                       related: int = 0, recovery=None, checks: bool = True, plan=None) -> Job:
    """An Export-page export (`export_formats`), each request its own job. `n` evaluation examples, `related`
    off-domain tasks measured (0: none); `recovery`: a level, or a `recovery_job` (or its result); `plan`: the
    task vocabulary's `vocab_estimate_job` (or its result). `checks=False`: the files only (`export_check_job`
    measures them), timed by its own rate."""
    import time

    from .export import parse_formats
    from .vocab import check_min_count, check_vocab_mode

    formats = tuple(parse_formats(formats))
    check_vocab_mode(vocab)
    min_count = check_min_count(min_count)
    fitted = recovery is not None and not isinstance(recovery, (str, RecoveryConfig))  # a Recovery or its job
    key = content_key("export_formats", ref, head, pcfg, out, formats, vocab, min_count, latency,
                      "fitted" if fitted else recovery, related, checks, time.time())
    what = f"export {out.rsplit('/', 1)[-1]} ({', '.join(formats)})"
    if not checks:
        return Job("export", export_formats, (ref, head, scores, pcfg, out, data, formats, vocab, min_count,
                                                bool(latency), overwrite, command, recovery, False, False, plan),
                   key, what, units=float(len(formats)), rate_key="export_write")
    return Job("export", export_formats, (ref, head, scores, pcfg, out, data, formats, vocab, min_count,
                                            bool(latency), overwrite, command, recovery, related > 0, True, plan),
               key, what, units=check_units(n, formats, vocab, related, latency), rate_key="point")


def check_units(n: int, formats, vocab: str, related: int, latency: bool) -> float:
    """Work units of an export's checks (evaluation passes over `n` examples; a latency table is worth 40)."""
    return float(n * (3 + len(formats) + (1 + 3 * related if vocab == "task" else 0)) + (40 * n if latency else 0))


def export_check_job(written: Job, ref: ModelRef, head: str, scores: Job | UnitScores, pcfg: PruneConfig, data,
                     latency: bool, n: int, related: int = 0, recovery=None, plan=None) -> Job:
    """The checks of the export `written` (an `export_formats_job` with checks=False; a Dask dependency, so they
    start when its files are in place): `export_check`, keyed by that export, timed by its own rate (reading
    hf/ back with transformers is slower per example than a curve point)."""
    formats, vocab = written.args[6], written.args[7]
    return Job("export", export_check, (written, ref, head, scores, pcfg, data, bool(latency), recovery,
                                          related > 0, plan), content_key("export_check", written.key),
               f"checking {written.args[4].rsplit('/', 1)[-1]} ({', '.join(formats)})",
               units=check_units(n, formats, vocab, related, latency), rate_key="export_check")
