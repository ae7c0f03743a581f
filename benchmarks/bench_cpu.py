"""Who has the CPU while bench_interactive.py measures: CPU seconds by role (browsers, app server, job workers) from
/proc, and the renicer that holds every Chromium thread at a low priority while the 8 sessions press their sliders."""
from __future__ import annotations

import os
from pathlib import Path


def _processes():
    """(/proc entry, command line) of every process on this machine that is still there when read."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield proc, (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def cpu_by_role() -> dict:
    """CPU seconds used so far by each role on this machine: the browsers (Chromium), the app server (Streamlit),
    the job workers, everything else; from /proc (utime + stime of every process, all its threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict = {"browsers": 0.0, "app server": 0.0, "job workers": 0.0, "other": 0.0}
    for proc, cmd in _processes():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = ("browsers" if _is_chromium(cmd) else "app server" if "tp_app.launch" in cmd else
                "job workers" if "spawn_main" in cmd or "distributed.cli" in cmd else "other")
        out[role] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _is_chromium(cmd: str) -> bool:
    return "chrom" in cmd.split(" ")[0]


class BrowserRenicer:
    """Holds every thread of every Chromium process at the given nice value. Chromium sets its own priorities as it
    runs (as root: its GPU process at -8, foreground renderers at 0, whatever it inherited), so a nice wrapper alone
    does not stick: in a run with one, eight renderers at nice 0 took a core and the GPU process a quarter, and the
    job worker (nice 10) got 0.19 of a core. Re-applied every half second; on Linux nice is per thread.
    With the kernel's autogroup scheduling on (/proc/sys/kernel/sched_autogroup_enabled = 1), CPU is shared first
    between autogroups (one per session: Chromium, launched by Playwright with its own session, sits in another one
    than the server and its workers), and a thread's nice counts only inside its group: on such a machine
    (2026-12-01) the 8 pages at thread nice 19 took 1.06 cores and the workers (nice 10) 0.56. So autogroup
    scheduling is turned off while the renicer holds (restored by stop()) where this process may write the switch;
    setting the browser groups' own nice to 19 instead starved the pages (0.31 cores for 8 of them, presses spread
    over 13 s, p95 20 s). Where the switch cannot be written, stop() says autogroup stayed on."""

    SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")

    def __init__(self, nice: int, every: float = 0.5):
        import threading

        self.nice, self.every, self.changed = int(nice), every, 0
        self.autogroup_was = self.autogroup_during = None
        try:
            self.autogroup_was = self.autogroup_during = int(self.SWITCH.read_text())
            if self.autogroup_was:
                self.SWITCH.write_text("0")
                self.autogroup_during = 0
        except (OSError, ValueError):
            pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            for proc, cmd in _processes():
                if not _is_chromium(cmd):
                    continue
                try:
                    for task in (proc / "task").iterdir():
                        tid = int(task.name)
                        if os.getpriority(os.PRIO_PROCESS, tid) != self.nice:
                            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
                            self.changed += 1
                except (OSError, ValueError):
                    continue  # gone meanwhile, or not ours

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        if self.autogroup_was and not self.autogroup_during:
            try:
                self.SWITCH.write_text(str(self.autogroup_was))
            except OSError:
                pass
        return {"nice": self.nice, "threads_reniced": self.changed,
                "autogroup": {"before": self.autogroup_was, "during": self.autogroup_during}}
