"""Stage 6 of the pipeline: export a genuinely smaller model for one task.

One module per format or concern:

    folder.py      the TaskPrune folder + mask file (`export_pruned`), its steps, safe names, zips
    formats.py     `export_formats`: every requested format of one pruned model, checked and measured
    onnx.py        ONNX graph export (fused attention where the family allows), `onnx_logits`
    int8.py        dynamic int8 quantization, onnxruntime session settings (`ort_session`)
    hf.py          plain Hugging Face folder, padded to transformers' one-width config
    prompt_file.py a causal LM's prompt.json and `render_prompts` (stdlib only) beside its ONNX and HF files
    vocabulary.py  the task-vocabulary step and its off-domain cost (`tp_core.vocab` does the pruning)
    latency.py     timing torch and onnxruntime side by side (`latency_table`)
    card.py        model cards (README.md)
    report.py      `ExportReport`, parameter counts, sizes, metrics with intervals
"""
from .card import folder_card, hf_snippet, model_card, onnx_snippet
from .folder import (ExportResult, check_out_dir, default_command, export_pruned, load_export, prune_for_task,
                     safe_export_dir, write_mask_file, zip_export)
from .formats import FORMATS, check_formats, export_formats, parse_formats, pending_checks
from .hf import HEAD_FILE, export_hf, hf_logits, hf_padding_params, padded_for_hf, unpruned_heads, write_vocab_txt
from .int8 import INT8_SESSION, ort_session, quantize_int8, session_settings
from .latency import latency_table, measure_latency, other_cpu_cores
from .onnx import FUSED_ATTENTION, ONNX_OPSET, export_onnx, onnx_logits
from .prompt_file import PROMPT_FILE, prompt_dict, render_prompts, write_prompt_json
from .report import (ExportReport, FormatReport, folder_bytes, jsonable, metric_text, metric_with_interval,
                     params_by_part, planned_counts)
from .vocabulary import related_tasks

__all__ = [
    "FORMATS", "FUSED_ATTENTION", "HEAD_FILE", "INT8_SESSION", "ONNX_OPSET", "PROMPT_FILE", "ExportReport",
    "ExportResult", "FormatReport", "check_formats", "check_out_dir", "default_command", "export_formats", "export_hf",
    "export_onnx", "export_pruned", "folder_bytes", "folder_card", "hf_logits", "hf_padding_params", "hf_snippet",
    "jsonable", "latency_table", "load_export", "measure_latency", "metric_text", "metric_with_interval", "model_card",
    "onnx_logits", "onnx_snippet", "ort_session", "other_cpu_cores", "padded_for_hf", "params_by_part",
    "parse_formats", "pending_checks", "planned_counts", "prompt_dict", "prune_for_task", "quantize_int8",
    "related_tasks", "render_prompts", "safe_export_dir", "session_settings", "unpruned_heads", "write_mask_file",
    "write_prompt_json", "write_vocab_txt", "zip_export",
]
