"""The CLI run in this test process: `tp_core.cli.main` with TP_HOME set and its output captured, returned like
`subprocess.run(..., capture_output=True, text=True)`. A `python -m tp_core` process costs seconds of imports and a
job engine of its own; tests of what the CLI prints and writes use this, and keep a real process only where the
process boundary itself is under test (a kill, the module entry point, an environment without torch)."""
from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import pytest


def cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m tp_core <args>` in-process with the given TP_HOME and, like a new process, a new job engine
    (the previous one and the results it holds in memory are closed first: a later command must find what is on
    disk, not what an earlier one computed)."""
    from tp_core.cli import main
    from tp_core.engine import shutdown_engine

    shutdown_engine()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if home is not None:
            mp.setenv("TP_HOME", str(home))
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["tp_core", *args], code or 0, out.getvalue(), err.getvalue())
