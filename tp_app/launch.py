"""`python -m tp_app.launch run app.py ...` = `streamlit run`, with the app's heavy imports (torch, transformers,
the pages' helpers) and the default model loaded in a background thread of the server process as it starts, so the
first visitor's first page does not wait for them (measured: the first page run took 10.9 s cold); then the
validation and scoring splits of the model's tasks are read into memory. Prints "TaskPrune Studio: model preloaded"
and "TaskPrune Studio: task data read" when done. `tp_core serve` (`make run`) starts the app this way."""
from __future__ import annotations

import sys
import threading
import time


def _preload() -> None:
    t0 = time.time()
    try:
        from tp_app import common

        model = common._load_model_cached(common.default_model_spec(), False)
        print(f"TaskPrune Studio: model preloaded in {time.time() - t0:.1f} s", flush=True)
        _read_splits(model)
        print(f"TaskPrune Studio: task data read in {time.time() - t0:.1f} s", flush=True)
    except Exception as exc:  # noqa: BLE001 - the page loads it (and reports a problem) as before
        print(f"TaskPrune Studio: preload skipped ({type(exc).__name__}: {exc})", flush=True)


def _read_splits(model) -> None:
    """Read the validation and scoring splits of the model's bundle tasks into tp_core.data's in-process cache (the
    first Model page run read 9 validation splits and imported `datasets`: 2.2 s of a 3.7 s run, py-spy)."""
    from tp_core.data import list_tasks, load_split

    for spec in list_tasks():
        if spec.name not in model.tasks:
            continue
        for split in dict.fromkeys(("validation", spec.scoring_split)):
            if split in spec.splits:
                try:
                    load_split(spec, split)
                except Exception:  # noqa: BLE001 - the page that needs it reports the problem
                    pass


def main() -> None:
    threading.Thread(target=_preload, name="tp-preload", daemon=True).start()
    from streamlit.web import cli

    sys.argv[0] = "streamlit"
    cli.main()


if __name__ == "__main__":
    main()
