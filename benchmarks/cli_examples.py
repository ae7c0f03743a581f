"""Time every command-line example of the README, run as written (docs/results.json key `cli_example_seconds`).

    .venv/bin/python benchmarks/cli_examples.py                 # the demo examples, fresh caches, merged into docs/
    .venv/bin/python benchmarks/cli_examples.py --llm           # also the decoder (smollm2) examples
    .venv/bin/python benchmarks/cli_examples.py --list          # print the extracted commands and stop

The examples are the `python -m tp_core ...` lines of the README's bash blocks (a trailing backslash joins lines, a
trailing `# comment` is dropped, and an optional `[--flag]` is left out, as a reader would type it). Each runs in a
fresh working folder (so `--out exports/...` never exists yet) with this interpreter, one after the other in README
order, with a timeout. By default TP_HOME is a new folder whose `models/` links to the real TP_HOME's models (the
full demo must be built there): every cache starts empty, as on a first run, and an example reuses only what an
earlier example of the same run computed, as it would for a reader going down the README. `--warm` uses the real
TP_HOME and its caches instead. Examples of a decoder LLM (`--model smollm2`) take many minutes on a CPU; they are
listed as skipped unless `--llm`. The goal per example is GOAL_S seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DOCS, ROOT, machine, merge_results  # noqa: E402

GOAL_S = 120.0
LLM_MODELS = ("smollm2",)
PREFIX = re.compile(r"^(?:\.venv/bin/)?python3? -m tp_core\b")


def readme_examples(readme: Path) -> list[str]:
    """The `python -m tp_core ...` commands of the README's bash blocks, as a reader would type them."""
    out, block, pending = [], False, ""
    for raw in readme.read_text().splitlines():
        line = raw.rstrip()
        if line.startswith("```"):
            block, pending = line.strip() == "```bash" and not block, ""
            continue
        if not block:
            continue
        text = (pending + " " + line.strip()).strip() if pending else line.strip()
        if text.endswith("\\"):
            pending = text[:-1].strip()
            continue
        pending = ""
        text = re.sub(r"\s+#.*$", "", text)  # a trailing comment
        text = re.sub(r"\s*\[[^\]]*\]", "", text)  # an optional part: left out
        if PREFIX.match(text):
            out.append(" ".join(text.split()))
    return out


def needs_llm(command: str) -> bool:
    """Whether an example runs a decoder LLM (many minutes on a CPU)."""
    args = shlex.split(command)
    return any(a == "--model" and i + 1 < len(args) and args[i + 1] in LLM_MODELS for i, a in enumerate(args))


def cold_home(real: Path) -> Path:
    """A new TP_HOME whose models/ links to `real`'s: the built models, no caches."""
    home = Path(tempfile.mkdtemp(prefix="tp-cli-examples-"))
    (home / "models").symlink_to(real / "models", target_is_directory=True)
    return home


def run_example(command: str, home: Path, timeout: float) -> dict:
    """Run one example in a fresh working folder; its wall seconds, exit code and the end of its stderr."""
    argv = [sys.executable, *shlex.split(PREFIX.sub("python -m tp_core", command))[1:]]
    env = {**os.environ, "TP_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tp-cli-run-") as cwd:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
            seconds, rc, err = time.perf_counter() - t0, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            seconds, rc = time.perf_counter() - t0, None
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    status = "timeout" if rc is None else "failed" if rc else "met" if seconds <= GOAL_S else "over"
    tail = [ln for ln in re.split(r"[\r\n]+", err) if ln.strip()][-3:]
    return {"command": command, "seconds": round(seconds, 1), "rc": rc, "status": status,
            "loadavg_start": round(load, 2), "loadavg_end": round(os.getloadavg()[0], 2), "stderr_tail": tail}


def _merged_rows(old: dict, new: list[dict], examples: list[str], info: dict) -> list[dict]:
    """The README's examples in order: this run's rows where it timed them (marked with its date), else the earlier
    run's row for the same command; the run's description says both runs."""
    for r in new:
        r["date"] = info["date"]
    by_command = {r["command"]: r for r in old.get("rows", [])} | {r["command"]: r for r in new}
    if old.get("command"):
        info["command"] = f"{old['command']} ({old['date']}), then {info['command']}"
        info["total_seconds"] += old.get("total_seconds", 0.0)
    return [by_command[c] for c in examples if c in by_command]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--llm", action="store_true", help="also run the decoder LLM examples (many minutes each)")
    ap.add_argument("--warm", action="store_true", help="use TP_HOME and its caches instead of fresh caches")
    ap.add_argument("--only", action="append", default=None, metavar="TEXT",
                    help="run only the examples containing TEXT (repeatable); their rows replace the earlier run's")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per example (default 600)")
    ap.add_argument("--list", action="store_true", help="print the extracted examples and stop")
    ap.add_argument("--merge", default=str(DOCS / "results.json"), help="results.json to merge into ('' = none)")
    args = ap.parse_args(argv)
    examples = readme_examples(Path(args.readme))
    if args.list:
        print("\n".join(("[llm] " if needs_llm(c) else "") + c for c in examples))
        return 0
    real = Path(os.environ.get("TP_HOME", Path.home() / ".cache" / "taskprune"))
    home = real if args.warm else cold_home(real)
    rows, t0 = [], time.time()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "caches": "warm (TP_HOME)" if args.warm else "fresh (models linked from TP_HOME)",
            "command": "benchmarks/cli_examples.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "goal_s": GOAL_S, "timeout_s": args.timeout}
    for command in examples:
        if args.only and not any(t in command for t in args.only):
            continue
        if needs_llm(command) and not args.llm:
            rows.append({"command": command, "seconds": None, "status": "skipped (decoder LLM: --llm)"})
            continue
        row = run_example(command, home, args.timeout)
        rows.append(row)
        print(f"{row['seconds']:7.1f} s  {row['status']:7s}  {command}", flush=True)
    info["total_seconds"] = round(time.time() - t0, 1)
    info["machine"]["loadavg_end"] = list(os.getloadavg())
    if args.only and args.merge and Path(args.merge).is_file():  # re-timed examples replace their rows
        rows = _merged_rows(json.loads(Path(args.merge).read_text()).get("cli_examples", {}), rows, examples, info)
    doc = {"cli_example_seconds": {r["command"]: r["seconds"] for r in rows if r["seconds"] is not None},
           "cli_examples": {**info, "rows": rows}}
    print(json.dumps(doc["cli_example_seconds"], indent=1))
    if args.merge:
        merge_results(Path(args.merge), doc)
    return 0 if all(r["status"] in ("met", "skipped (decoder LLM: --llm)") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
