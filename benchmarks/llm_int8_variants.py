"""Why a causal LM's int8 ONNX file loses accuracy, and what leaving some projections in fp32 buys: the fp32 scoring
graph of one export quantized (onnxruntime dynamic int8, per-channel weights, as `export/int8.py` does) with whole
groups of MatMuls left out, each evaluated on the same validation prompts through the export's own prompt.json and
tokenizer.json (the deployment path). A finding, not a product setting: the export still writes the plain int8 file.

    .venv/bin/python benchmarks/llm_int8_variants.py /tmp/llm-exp-v --limit 200 --merge docs/results.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import merge_results  # noqa: E402

# variant -> (op types to quantize, whether a MatMul node of that name stays fp32)
VARIANTS = {
    "all (the export's int8)": (None, lambda n: False),
    "down_proj in fp32": (None, lambda n: "down_proj" in n),
    "down_proj and o_proj in fp32": (None, lambda n: "down_proj" in n or "o_proj" in n),
    "only gate_proj and up_proj int8": (["MatMul"], lambda n: not ("gate_proj" in n or "up_proj" in n)),
}


def main() -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tp_core.data import load_split
    from tp_core.export import onnx_logits, ort_session

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--merge", type=Path, default=None)
    args = ap.parse_args()
    onnx_dir = args.export_dir / "onnx"
    meta = json.loads((onnx_dir / "taskprune_onnx.json").read_text())
    data = load_split(meta["task"], "validation", limit=args.limit)
    y = np.asarray(data.labels)

    def run(path: Path) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        logits = onnx_logits(ort_session(path), onnx_dir / "tokenizer.json", data.texts, data.pairs,
                             prompt=onnx_dir / "prompt.json")
        return logits.argmax(1), time.perf_counter() - t

    ref, ref_s = run(onnx_dir / "model.onnx")
    rows = [{"variant": "fp32", "accuracy": float((ref == y).mean()), "agrees_with_fp32": 1.0,
             "mb": round((onnx_dir / "model.onnx").stat().st_size / 1e6), "seconds": round(ref_s, 1)}]
    names = [n.name for n in onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False).graph.node
             if n.op_type in ("MatMul", "Gemm")]
    with tempfile.TemporaryDirectory(prefix="tp-int8-") as tmp:
        for name, (ops, keep_fp32) in VARIANTS.items():
            out = Path(tmp) / "model.int8.onnx"
            (Path(tmp) / "taskprune_onnx.json").write_text(json.dumps(meta))
            quantize_dynamic(str(onnx_dir / "model.onnx"), str(out), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=ops, nodes_to_exclude=[n for n in names if keep_fp32(n)],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            pred, sec = run(out)
            rows.append({"variant": name, "accuracy": float((pred == y).mean()),
                         "agrees_with_fp32": float((pred == ref).mean()), "mb": round(out.stat().st_size / 1e6),
                         "seconds": round(sec, 1)})
            print(rows[-1], flush=True)
    res = {"export": str(args.export_dir), "task": meta["task"], "n": len(y), "rows": rows,
           "command": "benchmarks/llm_int8_variants.py " + " ".join(sys.argv[1:])}
    print(json.dumps(res, indent=1))
    if args.merge:
        merge_results(args.merge, {"llm_int8_variants": res})


if __name__ == "__main__":
    main()
