"""The ONNX int8 format: dynamic quantization of the fp32 graph, and the onnxruntime session settings an export
recommends for each of its files (kept in taskprune_onnx.json's "sessions", read by `ort_session` and by the model
card's snippet)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# onnxruntime options for the int8 file: its SkipLayerNormalization fusion (residual add + LayerNorm in one node)
# slows the dynamically quantized graph down; the fp32 file runs as fast either way (docs/RESULTS.md, export).
INT8_SESSION = {"disabled_optimizers": ["SkipLayerNormFusion"]}
NOTE = ("dynamic int8 quantization: weights int8 per channel, activations quantized at run time; its logits differ "
        "from fp32 by design (see the check difference and the metric)")


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization (weights int8 per output channel, activations quantized at run time) with
    onnxruntime. Per-channel scales follow fp32 more closely than one scale per matrix, at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a generic "consider pre-processing" warning on the root logger
    try:
        # DefaultTensorType: shape inference cannot type the outputs of onnxruntime's own (com.microsoft) nodes
        import onnx

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    side = Path(dst).parent / "taskprune_onnx.json"  # how to open it: read by ort_session and the card's snippet
    if side.is_file():
        meta = json.loads(side.read_text())
        meta.setdefault("sessions", {})[Path(dst).name] = INT8_SESSION
        side.write_text(json.dumps(meta, indent=1))
    return Path(dst)


def session_settings(path: Path) -> dict:
    """The InferenceSession keyword arguments an export recommends for `path` (taskprune_onnx.json's "sessions")."""
    side = Path(path).parent / "taskprune_onnx.json"
    try:
        return dict(json.loads(side.read_text()).get("sessions", {}).get(Path(path).name, {}))
    except (OSError, ValueError):
        return {}


def ort_session(path: Path, threads: int | None = None):
    """A CPU onnxruntime session for an exported file, with the export's recommended settings for it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                **session_settings(path))
