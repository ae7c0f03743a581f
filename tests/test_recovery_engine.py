"""Recovery in the job engine (tp_core/work.py): a recovered point is its own job (the level and the calibration
data are in the content key), equals fitting the recovery directly and evaluating the masked + recovered model,
curve plans add "<method>+<level>" twins, and an export job folds the recovery in."""
import json

import pytest

from tiny import grad_x_act_point
from tp_core.attribution import AttributionConfig, attribute
from tp_core.data import load_split
from tp_core.errors import TPError
from tp_core.evaluation import evaluate_masked
from tp_core.masks import PruneConfig, build_masks
from tp_core.recovery import RecoveryConfig, recover
from tp_core.policy import curve_plan, recovered_method
from tp_core.work import (DataRef, PointResult, calibration_ref, export, export_job, point, point_job, scores_job,
                          search_job)


def test_recovered_point_is_another_job_and_equals_the_direct_computation(engine, tiny):
    model, ref = tiny
    pcfg = PruneConfig(0.6, 0.25, "global")
    cfg, sjob, data, plain = grad_x_act_point(model, ref, pcfg, 32)
    rcfg = RecoveryConfig(level="lstsq", samples=24, seed=1)
    rjob = point_job(model, ref, "sst2", sjob, pcfg, data, 32, recovery=rcfg)
    bias = point_job(model, ref, "sst2", sjob, pcfg, data, 32, recovery=RecoveryConfig(level="bias", samples=24))
    assert len({plain.key, rjob.key, bias.key}) == 3  # the level is part of the key
    assert point_job(model, ref, "sst2", sjob, pcfg, data, 32, recovery="none").key == plain.key
    assert point_job(model, ref, "sst2", sjob, None, data, 32, recovery=rcfg).key == \
        point_job(model, ref, "sst2", sjob, None, data, 32).key  # nothing to recover on the dense model
    # calibration: a seeded sample of the task's scoring split (train), never the evaluation examples
    assert rjob.args[-1] == DataRef("sst2", "train", 24, 1)
    other_seed = point_job(model, ref, "sst2", sjob, pcfg, data, 32, recovery=RecoveryConfig("lstsq", 24, seed=2))
    assert other_seed.key != rjob.key
    res = engine.wait(engine.submit(rjob, owner="t"), 180)
    assert isinstance(res, PointResult) and res.record.method == "grad_x_act+lstsq"
    assert res.recovery["level"] == "lstsq" and res.recovery["samples"] == 24
    masks = build_masks(attribute(model, "sst2", cfg), pcfg, model.unit_shape())
    rec = recover(model, "sst2", masks, load_split("sst2", "train", limit=24, seed=1), rcfg)
    direct = evaluate_masked(model, "sst2", load_split("sst2", "validation", limit=32), masks, recovery=rec)
    assert res.record.metric == pytest.approx(direct.metric)
    assert res.low <= res.record.metric <= res.high
    assert PointResult.from_dict(json.loads(json.dumps(res.to_dict()))).recovery == res.recovery
    plain_res = engine.wait(engine.submit(plain, owner="t"), 180)
    assert plain_res.record.method == "grad_x_act" and plain_res.recovery is None


def test_point_worker_caches_recovered_and_plain_points_apart(tiny):
    model, ref = tiny
    sc = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    pcfg = PruneConfig(0.7, 0.0)
    data = DataRef("sst2", "validation", 24)
    calib = DataRef("sst2", "train", 16, 0)
    a = point(lambda f, m: None, ref, "sst2", sc, pcfg, data)
    b = point(lambda f, m: None, ref, "sst2", sc, pcfg, data, RecoveryConfig("scale", 16), calib)
    assert (a.record.method, b.record.method) == ("magnitude", "magnitude+scale")
    again = point(lambda f, m: None, ref, "sst2", sc, pcfg, data, RecoveryConfig("scale", 16), calib)  # cache
    assert again.to_dict() == b.to_dict()
    with pytest.raises(TPError, match="Recovery level"):
        point(lambda f, m: None, ref, "sst2", sc, pcfg, data, "full", calib)


def test_curve_plan_adds_recovered_twins(tiny):
    model, ref = tiny
    cfg = AttributionConfig(method="grad_x_act", samples=8)
    stages = [(DataRef("sst2", "validation", 16), 16), (DataRef("sst2", "validation", 40), 40)]
    args = (model, ref, "sst2", cfg, ["grad_x_act", "random"], 0.0, "global", stages, (0.0, 0.5, 0.9))
    plain, _, slider = curve_plan(*args, slider=0.42)
    plan, _, slider2 = curve_plan(*args, slider=0.42, recovery="lstsq")
    assert [s.key for s in slider] == [s.key for s in slider2]
    plain_keys = [p.job.key for p in plain]
    # the plain plan is unchanged: its jobs in the same order, the twins placed among them by priority
    assert [p.job.key for p in plan if p.job.key in set(plain_keys)] == plain_keys
    twins = [p for p in plan if p.job.key not in set(plain_keys)]
    assert len(twins) == len(plan) - len(plain)
    assert twins and {p.method for p in twins} == {"grad_x_act+lstsq", "random+lstsq"}
    assert not set(p.job.key for p in twins) & set(plain_keys)
    assert all(p.job.args[5].level == "lstsq" and p.job.args[6].split == "train" for p in twins)
    prio = {(p.method, p.sparsity, p.stage): p.priority for p in plan}
    for si in (0, 1):  # the slider's recovered twin comes right after the slider's own point
        assert prio[("grad_x_act+lstsq", 0.42, si)] == prio[("grad_x_act", 0.42, si)] - 1
    assert prio[("grad_x_act+lstsq", 0.9, 1)] < prio[("grad_x_act", 0.9, 1)]
    assert recovered_method("ig", RecoveryConfig("bias")) == "ig+bias"
    assert not [p for p in twins if p.sparsity == 0.0]  # no twin of the dense point


def test_export_job_folds_the_recovery(tiny, tmp_path):
    from tp_core.export import load_export
    from tp_core.recovery import load_plan

    model, ref = tiny
    sc = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    pcfg = PruneConfig(0.6, 0.25)
    data = DataRef("sst2", "validation", 24)
    job = export_job(ref, "sst2", sc, pcfg, str(tmp_path / "e"), data, False, "test", 24, recovery="lstsq")
    assert job.args[8].level == "lstsq" and job.args[9] == calibration_ref(data, job.args[8])
    plain_job = export_job(ref, "sst2", sc, pcfg, str(tmp_path / "p"), data, False, "test", 24)
    assert len(plain_job.args) == 8
    out = export(lambda f, m: None, ref, "sst2", sc, pcfg, str(tmp_path / "e"), data, False, "test",
                 RecoveryConfig("lstsq", 16), DataRef("sst2", "train", 16, 0))
    assert out["reloaded_metric"] == pytest.approx(out["metric_pruned"])
    masks, rec, _ = load_plan(out["mask_file"], model)
    assert rec is not None and rec.level == "lstsq"
    assert load_export(out["path"]).pruning["recovery"]["level"] == "lstsq"


def test_smallest_model_search_with_recovery(engine, tiny):
    """"Smallest model keeping X%" with recovery on: its own job, every point recovered (calibrated like the curves'
    recovered points), and the chosen point's metric is the recovered model's."""
    model, ref = tiny
    cfg = AttributionConfig(method="magnitude")
    sjob = scores_job(model, ref, "sst2", cfg, None)
    data = DataRef("sst2", "validation", 32)
    rcfg = RecoveryConfig(level="lstsq", samples=16)
    grid = (0.2, 0.5, 0.8)
    plain = search_job(ref, "sst2", sjob, None, data, 0.5, grid, 0.0, "global", 32)
    rjob = search_job(ref, "sst2", sjob, None, data, 0.5, grid, 0.0, "global", 32, recovery=rcfg)
    assert plain.key != rjob.key and search_job(ref, "sst2", sjob, None, data, 0.5, grid, 0.0, "global", 32,
                                                recovery="none").key == plain.key
    best = engine.wait(engine.submit(rjob, owner="t"), 180)
    assert best is not None and best.method == "magnitude+lstsq"
    masks = build_masks(attribute(model, "sst2", cfg), PruneConfig(best.ffn_sparsity, 0.0, "global"),
                        model.unit_shape())
    rec = recover(model, "sst2", masks, load_split("sst2", "train", limit=16, seed=0), rcfg)
    direct = evaluate_masked(model, "sst2", load_split("sst2", "validation", limit=32), masks, recovery=rec)
    assert best.metric == pytest.approx(direct.metric)


def test_a_larger_pass_evaluates_only_the_examples_a_smaller_pass_did_not(tiny, monkeypatch):
    """The curves' second pass (500 examples whose seeded draw starts with the coarse pass's 100) reuses the
    coarse pass's per-example predictions: only the new examples go through the model, and the metric is that of
    evaluating all of them at once."""
    import tp_core.work as work
    from tp_core.paths import tp_home

    model, ref = tiny
    sc = attribute(model, "sst2", AttributionConfig(method="magnitude"))
    pcfg = PruneConfig(0.55, 0.25)
    seen = []
    real = work.masked_logits
    monkeypatch.setattr(work, "masked_logits", lambda m, h, d, *a, **k: seen.append(len(d)) or real(m, h, d, *a, **k))
    noop = lambda f, m: None  # noqa: E731
    small, big = DataRef("sst2", "validation", 16), DataRef("sst2", "validation", 40)
    for scores, cfg in ((sc, pcfg), (None, None)):  # a pruned point and the dense one
        seen.clear()
        point(noop, ref, "sst2", scores, cfg, small)
        res = point(noop, ref, "sst2", scores, cfg, big)
        assert seen == [16, 24]
        masks = None if cfg is None else build_masks(sc, cfg, model.unit_shape())
        direct = evaluate_masked(model, "sst2", load_split("sst2", "validation", limit=40), masks)
        assert res.record.metric == pytest.approx(direct.metric) and res.n == 40
    # a recovered point: the recovery is fitted only when some example needs the model; its summary is kept
    rcfg, calib = RecoveryConfig("bias", 16), DataRef("sst2", "train", 16, 0)
    seen.clear()
    point(noop, ref, "sst2", sc, pcfg, small, rcfg, calib)
    first = point(noop, ref, "sst2", sc, pcfg, big, rcfg, calib)
    assert seen == [16, 24] and first.recovery["level"] == "bias"
    for f in (tp_home() / "points").iterdir():
        f.unlink()  # the finished points are gone, the per-example predictions are not
    fits = []
    monkeypatch.setattr(work, "recover", lambda *a, **k: fits.append(1))
    again = point(noop, ref, "sst2", sc, pcfg, big, rcfg, calib)
    assert seen == [16, 24] and not fits
    assert again.record.metric == first.record.metric and again.recovery == first.recovery


def test_the_export_checks_take_the_dense_metric_from_the_cached_dense_point(tiny, monkeypatch):
    """The Export page's checks ask the dense point (which the Model page computed) for the dense metric: with it
    cached, nothing is evaluated again."""
    from tp_core import work, work_export

    model, ref = tiny
    data = load_split("sst2", "validation", limit=16)
    dense = point(lambda f, m: None, ref, "sst2", None, None, data)

    def evaluated(*a, **kw):
        raise AssertionError("the dense model was evaluated again")

    monkeypatch.setattr(work, "masked_logits", evaluated)
    assert work_export.dense_metric(lambda f, m: None, ref, "sst2", data) == (dense.record.metric,
                                                                             (dense.low, dense.high))
