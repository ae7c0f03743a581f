"""The pages' one import (`from tp_app import common as C`): the Streamlit helpers they share, each kept in the
module of its concern:

* `style`: method colours and labels, the attribution explainer, formatters;
* `state`: the session's choices and defaults, persisted widgets, the session's id (cookie) for reloads;
* `models`: shared loaded models and task data, the session's model (a causal LM: with its edited prompts) and
  task, uploaded data, a GGUF model's one-off dequantization job;
* `prompt_edit`: the Model page's prompt editor for a causal LM;
* `jobs`: submitting the session's jobs (and letting go of those a view no longer draws), model / data references
  for workers, scores already computed;
* `progress`: progress bars, a button's one-off job and its answer, the sidebar's jobs panel;
* `page`: page set-up, the sidebar, friendly errors, the installation's folders and caps;
* `charts`: every chart (drawn with PNG and SVG downloads) and the HTML report's download button;
* `runlog`: the server's own page-run times (`TP_APP_RUN_LOG`) and the marks pages add to them.

No ML logic lives in tp_app: everything is a call into `tp_core`. Per-browser-session choices live in
`st.session_state` (isolated per session by Streamlit); loaded models, data and scores are shared through
process-wide caches (`st.cache_resource` and small locked dicts) plus the engine's on-disk caches.
"""
from __future__ import annotations

from .charts import chart, report_button
from .jobs import (data_ref, engine, eval_size, follow, job_info, job_result, known_scores, ref, scores_job,
                   scoring_ref, submit)
from .models import (UPLOAD_PREFIX, askable_tasks, budget_tokens, bundle_tasks, current_task, default_model_spec,
                     first_examples, head_for,
                     load_model, loading_in_background, model_tasks, needs_conversion, preparation_job,
                     prompt_edits, require_model_and_task, session_model, upload_limits_caption, validation_data,
                     wait_for_load)
from .page import ASSETS, exports_root, friendly, limits_rows, page
from .progress import job_answer, job_line, poll_every, show_progress, show_progress_compact
from .state import (FFN_MAX, FFN_STEP, HEAD_MAX, HEAD_STEP, LABEL_CHOICES, UNIT_CHOICES, attribution_config, flash,
                    persisted, ranges, recovery_config, set_value)
from .runlog import mark as mark_drawn
from .style import ATTRIBUTION_HELP, METHOD_COLORS, METHOD_LABELS, fmt_seconds, rgba
