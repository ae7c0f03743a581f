"""Each page's first and second AppTest run in one process (as in one server process), on TP_APP_MODEL (default demo),
with cProfile of the first run of one page (`--profile pages/3_Heatmaps.py`; the script itself runs in another
thread, so py-spy --threads sees more). The figures behind the data-loading fix of tp_core/data.py.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/page_first_runs.py [--profile PAGE]
"""
import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAGES = ["app.py", "pages/1_Model.py", "pages/2_Attribution.py", "pages/3_Heatmaps.py", "pages/4_Prune.py"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, metavar="PAGE")
    a = ap.parse_args()
    os.chdir(ROOT)
    from streamlit.testing.v1 import AppTest

    for p in PAGES:
        at = AppTest.from_file(str(ROOT / p), default_timeout=300)
        prof = cProfile.Profile() if p == a.profile else None
        t = time.perf_counter()
        if prof:
            prof.enable()
        at.run()
        if prof:
            prof.disable()
        first = time.perf_counter() - t
        t = time.perf_counter()
        at.run()
        print(f"{p}: first run {first:.2f} s, second {time.perf_counter() - t:.2f} s, "
              f"exceptions {[e.value for e in at.exception][:1]}", flush=True)
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
