"""Export formats beyond the TaskPrune folder: ONNX (fp32 and int8), a plain Hugging Face folder, a pruned
vocabulary, and a model card with measured numbers.

One call, `export_formats(model, task, scores, prune_cfg, out_dir, formats, ...)`, prunes the model for `task`
(structure, then optionally vocabulary), writes every requested format, checks each against the masked torch
model on in-vocabulary examples, measures each one's metric on `eval_data`, and writes `README.md` (a Hugging Face
model card). Layout of `out_dir`:

    README.md             model card (Hugging Face YAML metadata)
    export_report.json    the ExportReport
    mask.json             per-task mask for the unchanged base model (`evaluate --mask`)
    taskprune/            TaskPrune folder (`tp_core.load_model`)            -- format "taskprune"
    onnx/model.onnx       + onnx/tokenizer.json, onnx/taskprune_onnx.json   -- format "onnx"
    onnx/model.int8.onnx  dynamic int8 quantization of model.onnx           -- format "onnx-int8"
    hf/                   config.json, model.safetensors, tokenizer files   -- format "hf"

With `formats == ["taskprune"]` the folder itself is the TaskPrune model (the layout of `export_pruned`) and the
mask file sits beside it. The folder is built under a temp name and renamed into place (never half written).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import TPError
from . import int8, onnx
from .card import model_card
from .folder import check_out_dir, default_command, prune_for_task, write_mask_file
from .hf import export_hf, hf_logits, notes as hf_notes, unpruned_heads, write_vocab_txt
from .int8 import ort_session, quantize_int8
from .latency import latency_table
from .onnx import export_onnx, graph_params, is_fused, onnx_logits
from .prompt_file import PROMPT_FILE
from .report import ExportReport, FormatReport, folder_bytes, jsonable, metric_with_interval, params_by_part
from .vocabulary import in_vocab_indices, offdomain_rows, related_tasks, task_vocabulary

FORMATS = ("taskprune", "onnx", "onnx-int8", "hf")
Progress = Callable[[float, str], None]


def parse_formats(value: str | Sequence[str]) -> list[str]:
    """`"onnx,hf"` or a list -> validated, de-duplicated list in the order given."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        f = str(raw).strip().lower()
        if not f:
            continue
        if f not in FORMATS:
            raise TPError(f"Unknown export format {str(raw).strip()!r}: choose from {', '.join(FORMATS)} "
                          "(comma-separated, e.g. --format onnx,hf).")
        if f not in out:
            out.append(f)
    if not out:
        raise TPError(f"No export format given: choose from {', '.join(FORMATS)}.")
    return out


@dataclass
class _Run:
    """One export's shared state: what every stage reads, and what measuring found."""
    model: Any
    task: str
    eval_data: Any
    progress: Progress
    metric_name: str = ""
    problem: str = ""
    small_full: Any = None  # the pruned structure, full vocabulary
    small: Any = None  # the exported model: the pruned structure (+ the task vocabulary)
    kept: set[int] | None = None  # the token ids a task vocabulary keeps
    vocab: Any = None  # its vocab.VocabReport
    dense: tuple = (None, None)  # metric and interval of the dense model on eval_data
    pruned: tuple = (None, None)  # ... of `small`
    params: dict | None = None  # params_by_part of `small`
    check: Any = None  # in-vocabulary check examples
    check_idx: list[int] | None = None  # their indices in eval_data (None: drawn from the validation split)
    masked_ref: np.ndarray | None = None  # the masked (unpruned) model's logits on them

    def metric(self, logits) -> tuple:
        return metric_with_interval(self.metric_name, self.problem, logits, self.eval_data.labels)

    def diff(self, logits) -> float | None:
        return None if self.masked_ref is None else float(np.abs(np.asarray(logits) - self.masked_ref).max())

    def measure(self, logits_of: Callable[[Sequence[str], Sequence[str] | None], np.ndarray]) -> tuple:
        """(metric, interval, max logit difference vs the masked model) of a format whose logits for (texts, pairs)
        `logits_of` gives; None where there is no evaluation data or no check example."""
        if self.eval_data is None:
            return None, None, self.diff(logits_of(self.check.texts, self.check.pairs)) if len(self.check) else None
        logits = np.asarray(logits_of(self.eval_data.texts, self.eval_data.pairs))
        m, ci = self.metric(logits)  # the check examples are some of these: one pass (one model load) for both
        return m, ci, self.diff(logits[self.check_idx]) if len(self.check) else None


def _prepare(run: _Run, scores, prune_cfg, recovery, vocab: str, min_count: int, extra_texts,
             general_tokens: int | None, plan=None, keep_full: bool = True):
    """(masks, recovery): the pruned model of the export in `run` (structure, then with vocab="task" the
    vocabulary, from `plan` when counted already, and its token statistics), built the same way for writing and
    for checking its files; `keep_full`: keep the full-vocabulary structure beside it (to measure what the
    vocabulary costs)."""
    model, task, eval_data = run.model, run.task, run.eval_data
    info = model.task_info(task)
    run.metric_name = eval_data.spec.metric if eval_data is not None else info.metric
    run.problem = eval_data.spec.problem if eval_data is not None else info.problem
    run.progress(0.02, "pruning the structure")
    masks, run.small_full, recovery = prune_for_task(model, task, scores, prune_cfg, recovery, run.progress)
    run.small = run.small_full
    if vocab == "task":
        run.progress(0.06, "counting the task's tokens")
        run.small, run.kept, run.vocab = task_vocabulary(model, run.small_full, task, min_count, extra_texts,
                                                         eval_data, run.metric_name, general_tokens, plan, keep_full)
    run.params = params_by_part(run.small, task)
    return masks, recovery


def _measure(run: _Run, offdomain, offdomain_limit, dense: tuple | None = None) -> None:
    """The dense model's metric (`dense`: already known, e.g. a cached dense point), the exported model's and with
    a task vocabulary the pruned structure's with the full vocabulary and the off-domain rows."""
    from ..evaluation import predict_logits

    model, task, eval_data, progress = run.model, run.task, run.eval_data, run.progress
    if eval_data is None:
        return
    if dense is not None:
        run.dense = dense
    else:
        progress(0.1, "evaluating the dense model")
        run.dense = run.metric(predict_logits(model, task, eval_data))
    progress(0.16, "evaluating the pruned model")
    full_vocab_logits = predict_logits(run.small_full, task, eval_data)
    if run.vocab is not None:
        run.vocab.metric_full_vocab = run.metric(full_vocab_logits)[0]
        others = related_tasks(task) if offdomain is None else list(offdomain)
        run.vocab.offdomain.update(offdomain_rows(model, run.small_full, run.small, task, others, offdomain_limit,
                                                  progress))
        progress(0.42, "evaluating the exported model")
    run.pruned = run.metric(predict_logits(run.small, task, eval_data) if run.small is not run.small_full
                            else full_vocab_logits)
    if run.vocab is not None:
        run.vocab.metric_task_vocab = run.pruned[0]


def _check_examples(run: _Run, masks, recovery) -> None:
    """In-vocabulary examples (of eval_data, else the validation split) and the masked model's logits on them: every
    format is compared with those."""
    from ..data import load_split
    from ..evaluation import predict_logits

    data = run.eval_data if run.eval_data is not None else load_split(run.task, "validation", limit=256)
    idx = in_vocab_indices(run.model, run.task, run.kept, data.texts, data.pairs, 64)
    run.check, run.check_idx = data.subset(idx), idx if run.eval_data is not None else None
    if len(run.check):
        gates = masks.gates(run.model.device, recovery=recovery)
        run.masked_ref = predict_logits(run.model, run.task, run.check, gates)


def _write_taskprune(run: _Run, folder: Path, path: Path) -> FormatReport:
    run.progress(0.5, "writing the TaskPrune folder")
    run.small.save(folder)  # inside the export's temp folder: no second swap needed
    write_vocab_txt(run.small.tokenizer, folder)
    return FormatReport("taskprune", str(path), folder_bytes(folder), run.params["total"], run.params,
                        notes=["reload with tp_core.load_model(path)"])


def _write_onnx(run: _Run, formats: list[str], onnx_dir: Path, path: Path) -> tuple[list[FormatReport], dict]:
    """The "onnx" and "onnx-int8" formats in `onnx_dir` (reported under `path`); returns their reports and
    {format: file}."""
    run.progress(0.58, "exporting ONNX")
    fp32 = export_onnx(run.small, run.task, onnx_dir)
    tok_json = onnx_dir / "tokenizer.json"
    files: dict[str, Path] = {}
    if "onnx" in formats:
        files["onnx"] = fp32
    if "onnx-int8" in formats:
        run.progress(0.66, "quantizing to int8")
        files["onnx-int8"] = quantize_int8(fp32, onnx_dir / "model.int8.onnx")
    fused = is_fused(onnx_dir)
    prompt = onnx_dir / PROMPT_FILE if run.small.kind == "causal_lm" else None
    parts = graph_params(run.small, run.task, run.params)
    reports = []
    for label, file in files.items():
        notes = [onnx.NOTE] + ([onnx.FUSED_NOTE] if fused else []) + ([int8.NOTE] if label == "onnx-int8" else []) \
            + ([onnx.PROMPT_NOTE] if prompt is not None else [])
        size = file.stat().st_size + tok_json.stat().st_size + (prompt.stat().st_size if prompt is not None else 0)
        reports.append(FormatReport(label, str(path / file.name), size, parts["total"], parts, notes=notes))
    if "onnx" not in formats:
        fp32.unlink()
    return reports, files


def _write_hf(run: _Run, folder: Path, path: Path) -> FormatReport:
    run.progress(0.8, "writing the Hugging Face folder")
    info = export_hf(run.small, run.task, folder, unpruned_heads(run.model))
    parts = dict(run.params, padding=info["padding_params"], total=info["params"])
    return FormatReport("hf", str(path), folder_bytes(folder), info["params"], parts,
                        notes=hf_notes(info, run.params["total"]))


def _write_formats(run: _Run, formats: list[str], tmp: Path, out_dir: Path, legacy: bool):
    """Every format into the temp folder `tmp` (reported at its place under `out_dir`): (reports, ONNX files,
    the TaskPrune folder or None)."""
    reports, onnx_files, tp_dir = [], {}, None
    if "taskprune" in formats:
        tp_dir = tmp if legacy else tmp / "taskprune"
        reports.append(_write_taskprune(run, tp_dir, out_dir if legacy else out_dir / "taskprune"))
    if "onnx" in formats or "onnx-int8" in formats:
        written, onnx_files = _write_onnx(run, formats, tmp / "onnx", out_dir / "onnx")
        reports += written
    if "hf" in formats:
        reports.append(_write_hf(run, tmp / "hf", out_dir / "hf"))
    return reports, onnx_files, tp_dir


def _reader(run: _Run, fmt: str, local: Path) -> Callable:
    """logits(texts, pairs) of the written format `fmt` at `local`: ONNX with onnxruntime, hf/ with plain
    transformers."""
    if fmt in ("onnx", "onnx-int8"):
        sess, tok_json = ort_session(local), local.parent / "tokenizer.json"
        prompt = local.parent / PROMPT_FILE if run.small.kind == "causal_lm" else None
        return lambda texts, pairs: onnx_logits(sess, tok_json, texts, pairs, prompt=prompt)
    return lambda texts, pairs: hf_logits(local, run.task, texts, pairs)


def _check_formats(run: _Run, reports: list[FormatReport], where: Path, out_dir: Path) -> None:
    """Each written format's metric on eval_data and its largest logit difference from the masked model, read back
    from its files in `where` (the folder reported as `out_dir`): the TaskPrune folder as the model it saved,
    ONNX with onnxruntime, hf/ with plain transformers."""
    from ..evaluation import predict_logits

    for rep in reports:
        run.progress(0.7, f"checking {rep.format}")
        if rep.format == "taskprune":
            m, ci = run.pruned
            diff = run.diff(predict_logits(run.small, run.task, run.check)) if len(run.check) else None
        else:
            m, ci, diff = run.measure(_reader(run, rep.format, where / Path(rep.path).relative_to(out_dir)))
        rep.metric, rep.metric_interval, rep.check_max_abs_diff, rep.check_examples = m, ci, diff, len(run.check)


def _report(run: _Run, out_dir: Path, scores, prune_cfg, masks, vocab: str, formats: list[FormatReport],
            latency: dict | None, mask_file: Path, command: str) -> ExportReport:
    dense = params_by_part(run.model, run.task)
    return ExportReport(
        out_dir=str(out_dir), task=run.task, base_model=run.model.base_model, method=scores.method,
        attribution=dict(scores.settings), ffn_sparsity=prune_cfg.ffn_sparsity,
        head_sparsity=prune_cfg.head_sparsity, allocation=prune_cfg.allocation,
        actual_ffn_sparsity=masks.ffn_sparsity(), actual_head_sparsity=masks.head_sparsity(), vocab_mode=vocab,
        metric_name=run.metric_name, eval_examples=len(run.eval_data) if run.eval_data is not None else 0,
        metric_dense=run.dense[0], metric_dense_interval=run.dense[1], metric_pruned=run.pruned[0],
        metric_pruned_interval=run.pruned[1], params_dense=dense, params_pruned=run.params,
        bytes_dense=4 * dense["total"], formats=formats, vocab=run.vocab.to_dict() if run.vocab else None,
        latency=latency, mask_file=str(mask_file), command=command, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _write_card_and_report(folder: Path, report: ExportReport, small, tp_dir: Path | None, legacy: bool) -> None:
    """README.md (the model card) at the top, in hf/ and in taskprune/; export_report.json at the top (each file
    replaced atomically: a finished export's folder is rewritten in place when its checks end)."""
    from ..paths import atomic_write_text

    card = model_card(report, small)
    atomic_write_text(folder / "README.md", card)
    if report.format("hf"):
        atomic_write_text(folder / "hf" / "README.md", card)
    if tp_dir is not None and not legacy:
        atomic_write_text(tp_dir / "README.md", card)
    atomic_write_text(folder / "export_report.json", json.dumps(report.to_dict(), indent=1, default=jsonable))


def _check(run: _Run, masks, recovery, reports: list[FormatReport], where: Path, out_dir: Path, onnx_files: dict,
           offdomain, offdomain_limit, dense, latency: bool, latency_batches, latency_repeats) -> dict | None:
    """Every measurement of an export whose files are in `where`: the metrics (`_measure`), each format read back
    (`_check_formats`) and with `latency` the latency table, which it returns."""
    _measure(run, offdomain, offdomain_limit, dense)
    _check_examples(run, masks, recovery)
    _check_formats(run, reports, where, out_dir)
    if not latency:
        return None
    run.progress(0.9, "measuring latency")
    return latency_table(run.model, run.task, onnx_files, run.small, latency_batches, repeats=latency_repeats)


def _start(model, task: str, vocab: str, min_count: int, general_tokens, prune_cfg, formats) -> tuple:
    """The checks every export starts with: (formats, min_count, general_tokens) validated."""
    from ..vocab import check_general_tokens, check_min_count, check_vocab_applies

    formats = parse_formats(formats)
    check_vocab_applies(model, vocab)
    min_count = check_min_count(min_count)
    general_tokens = None if general_tokens is None else check_general_tokens(general_tokens)
    prune_cfg.validate()
    return formats, min_count, general_tokens


def export_formats(
    model,
    task: str,
    scores,
    prune_cfg,
    out_dir: str | Path,
    formats: str | Sequence[str] = ("taskprune",),
    vocab: str = "full",
    min_count: int = 1,
    extra_texts: Sequence[str] = (),
    eval_data=None,
    offdomain: Sequence[str] | None = None,
    offdomain_limit: int | None = None,
    latency: bool = False,
    latency_batches: Sequence[int] = (1, 32),
    latency_repeats: int = 20,
    overwrite: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
    recovery=None,
    general_tokens: int | None = None,
    dense: tuple | None = None,
    checks: bool = True,
    vocab_plan=None,
) -> ExportReport:
    """Prune `model` for `task` (structure from `scores` + `prune_cfg`; with vocab="task", the vocabulary too) and
    write `formats` under `out_dir`, with the model card and a JSON report. Every metric is measured on `eval_data`
    (skipped when None; `dense`: the dense model's (metric, interval) on it when already known); `offdomain` tasks
    (default: `related_tasks(task)` when vocab="task" and `eval_data` is given; at most `offdomain_limit` validation
    examples each) are evaluated with the full and the pruned vocabulary; `latency=True` times dense torch, pruned
    torch and each ONNX file (`latency_repeats` runs per runner and batch size).
    `recovery` (a `recovery.Recovery` fitted for these masks, or a level / RecoveryConfig fitted here) is folded
    into the pruned weights, as in `export_pruned`. With vocab="task", `general_tokens` of the bundle's most
    frequent tokens are kept beside the task's (None: `vocab.GENERAL_TOKENS`; 0: the task's tokens only).
    `checks=False` writes the files, the card and the report without measuring anything (the report's `pending`
    names what `check_formats` measures later, on the files in place). `vocab_plan`: the task vocabulary's
    `vocab.VocabPlan` when already counted (`vocab.plan_for_task`)."""
    from ..model import _swap_in

    t_start = time.time()
    formats, min_count, general_tokens = _start(model, task, vocab, min_count, general_tokens, prune_cfg, formats)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    check_out_dir(out_dir, overwrite)
    command = command or default_command()
    run = _Run(model, task, eval_data, progress or (lambda f, m: None))
    masks, recovery = _prepare(run, scores, prune_cfg, recovery, vocab, min_count, extra_texts, general_tokens,
                               vocab_plan, keep_full=checks)
    legacy = formats == ["taskprune"]
    mask_file = out_dir.parent / f"{out_dir.name}.mask.json" if legacy else out_dir / "mask.json"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        reports, onnx_files, tp_dir = _write_formats(run, formats, tmp, out_dir, legacy)
        write_mask_file(mask_file if legacy else tmp / "mask.json", masks, model, task, scores, prune_cfg, recovery)
        lat = _check(run, masks, recovery, reports, tmp, out_dir, onnx_files, offdomain, offdomain_limit, dense,
                     latency, latency_batches, latency_repeats) if checks else None
        report = _report(run, out_dir, scores, prune_cfg, masks, vocab, reports, lat, mask_file, command)
        report.pending = [] if checks else pending_checks(report, latency)
        report.seconds = round(time.time() - t_start, 1)
        _write_card_and_report(tmp, report, run.small, tp_dir, legacy)
        run.progress(0.98, "moving the export into place")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run.progress(1.0, "done")
    return report


def pending_checks(report: ExportReport, latency: bool) -> list[str]:
    """What `check_formats` measures on a written export, in words (the card and the page list them meanwhile)."""
    n = report.eval_examples
    out = [f"each format's {report.metric_name} on {n} validation examples and its logits against the pruned "
           "(masked) model" if n else "each format's logits against the pruned (masked) model"]
    if report.vocab and n:
        out.append("the task vocabulary's cost (the metric with the full vocabulary beside it)")
    if latency:
        out.append("latency before and after")
    return out


def check_formats(model, task: str, scores, prune_cfg, out_dir: str | Path, eval_data=None,
                  offdomain: Sequence[str] | None = None, offdomain_limit: int | None = None, latency: bool = False,
                  latency_batches: Sequence[int] = (1, 32), latency_repeats: int = 20, progress: Progress | None = None,
                  recovery=None, dense: tuple | None = None, vocab_plan=None) -> ExportReport:
    """The checks of an export that `export_formats(..., checks=False)` wrote to `out_dir` (the same `model`,
    `task`, `scores`, `prune_cfg`, fitted `recovery`, `eval_data` and `vocab_plan`; no extra texts): each format
    read back from its files and measured as `export_formats` measures it; then the card and export_report.json
    are written again with the numbers. Raises TPError when the folder is not that export any more (replaced or
    removed)."""
    t_start = time.time()
    out_dir = Path(out_dir)
    try:
        written = ExportReport.from_dict(json.loads((out_dir / "export_report.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        raise TPError(f"{out_dir} holds no export to check any more (removed or replaced).") from None
    if (written.task, written.ffn_sparsity, written.head_sparsity) != (task, prune_cfg.ffn_sparsity,
                                                                         prune_cfg.head_sparsity):
        raise TPError(f"{out_dir} was replaced by another export; its checks are left to that one.")
    v = written.vocab or {}
    run = _Run(model, task, eval_data, progress or (lambda f, m: None))
    masks, recovery = _prepare(run, scores, prune_cfg, recovery, written.vocab_mode, v.get("min_count", 1), (),
                               v.get("general_tokens") if written.vocab else None, vocab_plan)
    formats = [f.format for f in written.formats]
    onnx_files = {f.format: Path(f.path) for f in written.formats if f.format in ("onnx", "onnx-int8")}
    lat = _check(run, masks, recovery, written.formats, out_dir, out_dir, onnx_files, offdomain, offdomain_limit,
                 dense, latency, latency_batches, latency_repeats)
    report = _report(run, out_dir, scores, prune_cfg, masks, written.vocab_mode, written.formats, lat,
                     Path(written.mask_file), written.command)
    report.created, report.seconds = written.created, round(written.seconds + time.time() - t_start, 1)
    legacy = formats == ["taskprune"]
    _write_card_and_report(out_dir, report, run.small, out_dir if legacy else out_dir / "taskprune"
                           if "taskprune" in formats else None, legacy)
    run.progress(1.0, "checked")
    return report
