"""Latency of an export: the dense torch model, the pruned torch model and each ONNX file timed on the same input
shape with the same number of threads, with how busy the machine was meanwhile (ratios measured under load are not
speed-ups to quote)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .int8 import ort_session
from .onnx import input_names


def latency_inputs(vocab_size: int, batch: int, seq_len: int, names: Sequence[str], seed: int = 0) -> dict:
    """Random token ids (content does not change the time) of exactly `seq_len` tokens, no padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, seq_len), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {k: v for k, v in feed.items() if k in names}


def measure_latency(run: Callable[[], Any], repeats: int = 20, warmup: int = 3, budget_s: float = 30.0) -> dict:
    """Median / p90 / min wall time of `run()` in milliseconds (stops early after `budget_s`), and every run's
    time (`times_ms`, for intervals)."""
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    arr = np.array(times)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)), "min_ms": float(arr.min()),
            "repeats": len(times), "times_ms": [round(t, 4) for t in times]}


def torch_runner(model, task: str, feed: dict) -> Callable[[], Any]:
    batch = {k: torch.from_numpy(v).to(model.device) for k, v in feed.items()}

    def run():
        with torch.inference_mode():
            return model(**batch, task=task)

    return run


def onnx_runner(session, feed: dict) -> Callable[[], Any]:
    wanted = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in wanted}
    return lambda: session.run(["logits"], feed)


def _cpu_marks() -> tuple[float, float, float] | None:
    """(wall s, busy CPU seconds of the whole machine, CPU seconds of this process) from /proc/stat; None where
    there is no /proc (not Linux)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def other_cpu_cores(start, end) -> float | None:
    """Average number of cores other processes kept busy between two `_cpu_marks()` (the load average cannot
    tell: it counts this process's own busy threads too)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def latency_table(dense, task: str, onnx_files: dict[str, Path] | None = None, pruned=None,
                  batch_sizes: Sequence[int] = (1, 32), seq_len: int = 64, repeats: int = 20,
                  threads: int | None = None) -> dict:
    """{runner: {batch: latency dict}} for the dense torch model, the pruned torch model and each ONNX file, on the
    same input shape; torch and onnxruntime use the same number of threads. Load average and the cores other
    processes kept busy meanwhile (`other_cpu_cores`, None where unknown) are recorded beside it."""
    threads = threads or torch.get_num_threads()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    mark = _cpu_marks()
    try:
        out: dict[str, Any] = {"threads": threads, "seq_len": seq_len, "load_avg_before": os.getloadavg()[0]}
        names = ["input_ids", "attention_mask", "token_type_ids"]
        for label, model in (("torch_dense", dense), ("torch_pruned", pruned)):
            if model is None:
                continue
            out[label] = {}
            for b in batch_sizes:
                feed = latency_inputs(model.config.vocab_size, b, seq_len, input_names(model))
                out[label][str(b)] = measure_latency(torch_runner(model, task, feed), repeats)
        for label, path in (onnx_files or {}).items():
            sess = ort_session(path, threads)
            out[label] = {}
            vocab = _onnx_vocab_size(path)
            for b in batch_sizes:
                feed = latency_inputs(vocab, b, seq_len, names)
                out[label][str(b)] = measure_latency(onnx_runner(sess, feed), repeats)
        out["load_avg_after"] = os.getloadavg()[0]
        out["other_cpu_cores"] = other_cpu_cores(mark, _cpu_marks())
        return out
    finally:
        torch.set_num_threads(old)


def _onnx_vocab_size(path: Path) -> int:
    tok_file = Path(path).parent / "tokenizer.json"
    return len(json.loads(tok_file.read_text(encoding="utf-8"))["model"]["vocab"])
