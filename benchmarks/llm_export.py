"""What a decoder LLM's task export costs and gains (issue 28: `llm_export_params_ratio`,
`llm_onnx_int8_speedup_vs_torch_dense`): one export made with the CLI, read back from its export_report.json.

    HF_HUB_OFFLINE=1 .venv/bin/python -m tp_core export --model smollm2 --task sst2 --method grad_x_act \\
        --samples 64 --ffn-sparsity 0.3 --format taskprune,onnx,onnx-int8 --limit 200 --recover none --latency \\
        --out /tmp/llm-exp30
    .venv/bin/python benchmarks/llm_export.py /tmp/llm-exp30 [more export folders] --merge docs/results.json

The plan is the caller's: the issue asks for the plan that keeps at least 0.95 of dense (section 12 gives the
kept share per MLP sparsity). With `--vocab task` the summary also carries the task vocabulary's size and its metric
beside the full vocabulary's, on the task and on its related tasks (off-domain). Parameters are counted by the export
itself (the ONNX graph's own tensors: the input embedding, cut to the task vocabulary with `--vocab task`, plus the
label words' rows of the output embedding); speed is the export's `--latency` table
(torch and onnxruntime on the same thread count, median of repeated runs, load average recorded beside it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import merge_results


RUNNERS = {"taskprune": "torch_pruned"}  # the latency table's runner of a format, where its name differs


def _recovery(command: str) -> str:
    """The recovery level the export command asked for (its --recover argument; the CLI's default otherwise)."""
    words = command.split()
    return words[words.index("--recover") + 1] if "--recover" in words[:-1] else "the CLI's default"


def _vocab(v: dict | None) -> dict | None:
    """A task vocabulary's summary: tokens kept, the embedding's parameters, the metric with the full and the task
    vocabulary, and per related task (off-domain) the same pair."""
    if not v:
        return None
    return {"kept_tokens": v["kept_tokens"], "original_tokens": v["original_tokens"],
            "general_tokens": v["general_tokens"], "general_added": v["general_added"],
            "embedding_params_before": v["embedding_params_before"],
            "embedding_params_after": v["embedding_params_after"],
            "metric_full_vocab": v["metric_full_vocab"], "metric_task_vocab": v["metric_task_vocab"],
            "validation_examples_changed": (v.get("validation") or {}).get("examples_changed"),
            "offdomain": {t: {k: r.get(k) for k in ("n", "metric_dense", "metric_full_vocab", "metric_task_vocab",
                                                    "examples_changed")}
                          for t, r in (v.get("offdomain") or {}).items()}}


def summarise(report: dict) -> dict:
    """The keys of one export report: parameter ratios per format, kept metric, speed-ups at batch 1."""
    dense = report["params_dense"]["total"]
    formats = {f["format"]: f for f in report["formats"]}
    lat = report.get("latency") or {}

    def median(runner: str, batch: str = "1") -> float | None:
        return (lat.get(runner) or {}).get(batch, {}).get("median_ms")

    rows = {name: {"params": f["params"], "params_ratio": f["params"] / dense, "bytes": f["bytes_on_disk"],
                   "metric": f["metric"], "metric_interval": f["metric_interval"],
                   "kept": f["metric"] / report["metric_dense"] if report["metric_dense"] else None,
                   "median_ms_batch1": median(RUNNERS.get(name, name))} for name, f in formats.items()}
    torch_dense = median("torch_dense")
    int8 = median("onnx-int8")
    return {
        "task": report["task"], "method": report["method"], "ffn_sparsity": report["ffn_sparsity"],
        "head_sparsity": report["head_sparsity"], "recovery": _recovery(report.get("command") or ""),
        "eval_examples": report["eval_examples"], "metric_name": report["metric_name"],
        "metric_dense": report["metric_dense"], "metric_dense_interval": report["metric_dense_interval"],
        "params_dense": dense, "formats": rows, "torch_dense_median_ms_batch1": torch_dense,
        "latency_threads": lat.get("threads"), "latency_seq_len": lat.get("seq_len"),
        "load_avg_before": lat.get("load_avg_before"), "other_cpu_cores": lat.get("other_cpu_cores"),
        "command": report.get("command"), "created": report.get("created"),
        "onnx_params_ratio": rows.get("onnx", {}).get("params_ratio"),
        "vocab": _vocab(report.get("vocab")),
        "int8_speedup_vs_torch_dense": torch_dense / int8 if torch_dense and int8 else None,
    }


def variant(s: dict) -> dict:
    """One export's row in the comparison of plans: plan, vocabulary, parameters and kept share per format."""
    v = s.get("vocab") or {}
    return {"ffn_sparsity": s["ffn_sparsity"], "head_sparsity": s["head_sparsity"], "recovery": s["recovery"],
            "vocab": "task" if v else "full", "general_tokens": v.get("general_tokens"),
            "kept_tokens": v.get("kept_tokens"), "params_ratio": s["onnx_params_ratio"],
            "kept": s["formats"].get("onnx", {}).get("kept"),
            "int8_kept": s["formats"].get("onnx-int8", {}).get("kept"),
            "int8_speedup_vs_torch_dense": s["int8_speedup_vs_torch_dense"], "eval_examples": s["eval_examples"],
            "command": s["command"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", type=Path, nargs="+",
                    help="export folders; the first is the headline, all of them rows of the plan comparison")
    ap.add_argument("--merge", type=Path, help="results.json to put the keys into")
    args = ap.parse_args()
    runs = [summarise(json.loads((d / "export_report.json").read_text())) for d in args.export_dir]
    s = runs[0]
    print(json.dumps(s, indent=1))
    if args.merge:
        merge_results(args.merge, {"llm_export": s, "llm_export_params_ratio": s["onnx_params_ratio"],
                                   "llm_onnx_int8_speedup_vs_torch_dense": s["int8_speedup_vs_torch_dense"],
                                   "llm_export_variants": [variant(r) for r in runs]})


if __name__ == "__main__":
    main()
