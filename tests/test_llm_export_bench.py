"""benchmarks/llm_export.py: the export keys read from an export report (ratios, the runner of each format, the
recovery asked for)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from llm_export import summarise  # noqa: E402


def _fmt(name: str, params: int, metric: float) -> dict:
    return {"format": name, "params": params, "bytes_on_disk": params * 4, "metric": metric,
            "metric_interval": [metric - 0.1, metric + 0.1]}


def test_summarise_reads_ratios_speed_and_recovery_from_the_report():
    lat = {"threads": 2, "seq_len": 64, "torch_dense": {"1": {"median_ms": 120.0}},
           "torch_pruned": {"1": {"median_ms": 90.0}}, "onnx-int8": {"1": {"median_ms": 30.0}}}
    report = {"task": "sst2", "method": "grad_x_act", "ffn_sparsity": 0.3, "head_sparsity": 0.0,
              "eval_examples": 200, "metric_name": "accuracy", "metric_dense": 0.8, "metric_dense_interval": [0.7, 0.9],
              "params_dense": {"total": 1000}, "latency": lat,
              "formats": [_fmt("taskprune", 800, 0.8), _fmt("onnx", 810, 0.8), _fmt("onnx-int8", 810, 0.6)],
              "command": "python -m tp_core export --recover none --out x"}
    s = summarise(report)
    assert s["onnx_params_ratio"] == 0.81 and s["int8_speedup_vs_torch_dense"] == 4.0
    assert s["formats"]["taskprune"]["median_ms_batch1"] == 90.0 and s["formats"]["onnx"]["median_ms_batch1"] is None
    assert s["formats"]["onnx-int8"]["kept"] == 0.6 / 0.8 and s["recovery"] == "none"
    assert summarise({**report, "command": "python -m tp_core export"})["recovery"] == "the CLI's default"
