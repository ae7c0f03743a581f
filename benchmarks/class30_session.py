"""One student of benchmarks/class30.py in real Chromium (an async Playwright page in its own browser context): walks
the guided tour (pages/0_Tour.py, its five steps with Next), opens the Prune page, then moves the FFN slider when the
class does (`Rendezvous`): first to the point everyone asks for, then to points of its own.

What is timed, on the page's own clock (an init script records it, so a busy benchmark process that polls 30 pages
adds nothing to a figure):
* a page run: from the action (click, key press, navigation) to the end of the script run it started, as the app
  root's script-run state shows it (a run asked for while another goes on extends that run);
* a new point: from the slider's first key press to the moment the readout's caption names the new setting (the
  slider's first estimate); then the same point on all examples (`final_s`, on the benchmark's clock: from the
  press until it saw it), whose metric and example count are read together and kept for the exactness check.
"""
from __future__ import annotations

import asyncio
import random
import re
import time

# Records every script run ([start, end] in ms, Date.now()), the first user action since the benchmark cleared it,
# and when each "At FFN n%" caption of the slider's readout first appeared.
PAGE_WATCH = """
window.__tp = {runs: [], start: null, act: null, shown: {}};
const tpAct = () => { if (window.__tp.act === null) window.__tp.act = Date.now(); };
document.addEventListener('click', tpAct, true);
document.addEventListener('keydown', tpAct, true);
new MutationObserver(() => {
  const tp = window.__tp, now = Date.now();
  const app = document.querySelector('[data-testid=stApp]');
  const state = app && app.getAttribute('data-test-script-state');
  const busy = state === 'running' || state === 'rerunRequested';
  if (busy && tp.start === null) tp.start = now;
  if (!busy && tp.start !== null) { tp.runs.push([tp.start, now]); tp.start = null; }
  for (const el of document.querySelectorAll('[data-testid=stCaptionContainer]')) {
    const m = (el.textContent || '').match(/At FFN \\d+%/);
    if (m && !(m[0] in tp.shown)) tp.shown[m[0]] = now;
  }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true,
                      attributeFilter: ['data-test-script-state']});
"""
# a script run ended after the action (after the mark, for a navigation): the page run is over
RAN_JS = """(m) => { const tp = window.__tp; if (!tp) return false; const rs = tp.runs.slice(m);
  return tp.act === null ? rs.length > 0 : rs.some(([s, e]) => e >= tp.act); }"""
# no element is stale: the page has settled before the next action. Only awaited a while (SETTLE_S), never an
# error: a page whose progress fragments rerun all the time under load may never be idle as a whole (an earlier
# harness waited for both at once and stopped 23 of 30 sessions at its timeout on the tour's pruning step)
SETTLED_JS = "() => !document.querySelector('[data-testid=stElementContainer][data-stale=true]')"
SETTLE_S = 15.0
PAGE_BUSY_S = 60.0  # longest wait for a page run to end before it is recorded as censored (Student.page_run)
# the first script run that ended after the action: its end minus the action (ms), or null
RUN_MS_JS = """(m) => { const tp = window.__tp; if (tp.act === null) return null;
  const r = tp.runs.slice(m).find(([s, e]) => e >= tp.act); return r ? r[1] - tp.act : null; }"""
TEXT_JS = ("(ts) => { const m = document.querySelector('[data-testid=stMain]');"
           " return !!m && ts.every(t => m.innerText.includes(t)); }")
# the slider readout now: [caption text, metric value] of the "(pruned)" metric
READOUT_JS = """(label) => {
  const cap = [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
    .map(e => e.textContent || '').find(t => t.includes(label + ' '));
  const box = [...document.querySelectorAll('[data-testid=stMetric]')]
    .find(e => (e.textContent || '').includes('(pruned)'));
  const val = box && box.querySelector('[data-testid=stMetricValue]');
  return cap && val ? [cap, val.textContent.trim()] : null; }"""
# what each tour step shows once its jobs have landed (the step's content, not its progress)
STEP_READY = (("Area under the curve",), ("Colour: log10",), ("at 50%", "at 70%", "at 90%"), ("vs masks only",),
              ("Counted from the ig scores",))
STEP_NAMES = ("1 neuron", "2 heatmap", "3 pruning", "4 recovery", "5 export")


class Rendezvous:
    """The class's moments: every session waits here until all have arrived (a failed session arrives too)."""

    def __init__(self, n: int):
        self.n, self.count, self.event = n, 0, asyncio.Event()

    async def wait(self) -> float:
        self.count += 1
        if self.count >= self.n:
            self.event.set()
        await self.event.wait()
        return time.time()


class Student:
    """One browser session of the class; `records` collects every timed action (kind, seconds, error)."""

    def __init__(self, browser, url: str, label: str, timeout_s: float, seed: int, shots=None):
        self.browser, self.url, self.label, self.timeout = browser, url, label, timeout_s * 1000
        self.shots = shots  # a folder for screenshots of what this student saw (one student of the class)
        self.rng = random.Random(seed)
        self.records: list[dict] = []
        self.points: list[dict] = []
        self.ffn = 50  # the slider's value in whole percent (a new session's default)
        self.broken: str | None = None
        self.task: str | None = None

    async def open(self) -> None:
        ctx = await self.browser.new_context(viewport={"width": 1400, "height": 1000})
        await ctx.add_init_script(PAGE_WATCH)
        self.ctx, self.page = ctx, await ctx.new_page()

    async def close(self) -> None:
        await self.ctx.close()

    def _record(self, kind: str, seconds: float | None, error: str | None = None, **extra) -> None:
        self.records.append({"session": self.label, "kind": kind, "seconds": None if seconds is None else
                             round(seconds, 3), "error": error, **extra})

    async def shot(self, name: str) -> None:
        """A full-page screenshot into `shots` (when given), to look at what the student saw."""
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            try:
                await self.page.screenshot(path=str(self.shots / f"{self.label}-{name}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a screenshot is a nicety; the run goes on
                pass

    async def _page_error(self) -> str | None:
        err = self.page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        return (await err.first.inner_text())[:200] if await err.count() else None

    async def page_run(self, kind: str, action) -> None:
        """Do `action` and time it until the script run it started has ended (a page run). A page still busy after
        PAGE_BUSY_S (its progress fragments rerunning back to back under load, so no run ever ends) is recorded
        with the time waited and `censored` (a lower bound that counts in the percentiles); the walk goes on."""
        if self.broken:
            return
        t0 = time.perf_counter()
        try:
            mark = await self.page.evaluate("() => { if (!window.__tp) return 0; window.__tp.act = null; "
                                            "return window.__tp.runs.length; }")
            await action()
        except Exception as exc:  # noqa: BLE001 - a failed step is counted; the session stops walking
            self.broken = f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self._record(kind, None, self.broken)
            return
        try:
            await self.page.wait_for_function(RAN_JS, arg=mark, timeout=PAGE_BUSY_S * 1000, polling=100)
            ms = await self.page.evaluate(RUN_MS_JS, mark)
            seconds, censored = (ms / 1000.0 if ms is not None else time.perf_counter() - t0), False
        except Exception:  # noqa: BLE001 - still busy: a censored page run
            seconds, censored = time.perf_counter() - t0, True
        self._record(kind, seconds, await self._page_error(), wall_s=round(time.perf_counter() - t0, 3),
                     censored=censored)
        try:
            await self.page.wait_for_function(SETTLED_JS, timeout=SETTLE_S * 1000, polling=250)
        except Exception:  # noqa: BLE001 - still busy redrawing progress: the next step's waits cover it
            pass

    async def content(self, kind: str, texts: tuple[str, ...], since: float) -> None:
        """Wait until the main area shows all `texts` (a step's content after its jobs); seconds since `since`."""
        if self.broken:
            return
        try:
            await self.page.wait_for_function(TEXT_JS, arg=list(texts), timeout=self.timeout, polling=500)
            self._record(kind, time.perf_counter() - since, await self._page_error())
        except Exception as exc:  # noqa: BLE001
            self.broken = f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self._record(kind, None, self.broken)

    async def tour(self, read_s: float) -> None:
        """Open the tour and walk its five steps, each step's content awaited and read for `read_s` seconds."""
        page = self.page
        t0 = time.perf_counter()
        await self.page_run("open the tour", lambda: page.goto(self.url + "/Tour", timeout=self.timeout))
        for i, ready in enumerate(STEP_READY):
            if i:
                t0 = time.perf_counter()
                await self.page_run(f"tour Next -> step {STEP_NAMES[i]}",
                                    lambda: page.get_by_role("button", name="Next").click(timeout=self.timeout))
            await self.content(f"tour step {STEP_NAMES[i]} shown", ready, t0)
            await self.shot(f"tour-{i + 1}")
            await asyncio.sleep(read_s * (0.5 + self.rng.random()))

    async def prune(self) -> None:
        """Open the Prune page and wait for the slider's readout at its start value."""
        page = self.page
        t0 = time.perf_counter()
        nav = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Prune", exact=True)
        await self.page_run("open Prune", lambda: nav.first.click())  # exact: "TaskPrune Studio" is a link too
        await self.content("Prune readout shown", (f"At FFN {self.ffn}%",), t0)
        if not self.broken:
            text = await page.locator('[data-testid="stMain"]').inner_text()
            m = re.search(r"Task:\s*(\S+)\s*·", text)
            self.task = m.group(1) if m else None

    async def move(self, kind: str, target: int, spread_s: float, n_full: int) -> None:
        """Within `spread_s` of the class's moment, press the slider's arrow keys to `target` %; time the page run
        and the new point (first estimate, then all `n_full` examples) and keep what the readout showed."""
        await asyncio.sleep(spread_s * self.rng.random())
        if self.broken:
            return
        page, label = self.page, f"At FFN {target}%"
        await page.evaluate("(l) => { delete window.__tp.shown[l]; }", label)
        slider = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")

        async def press():
            await slider.focus()
            steps = target - self.ffn
            for _ in range(abs(steps)):  # quick presses: Streamlit sends the slider's value once they stop
                await page.keyboard.press("ArrowRight" if steps > 0 else "ArrowLeft")

        t_press = time.perf_counter()
        await self.page_run(f"slider -> {kind}", press)
        self.ffn = target
        if self.broken:
            return
        try:
            await page.wait_for_function("(l) => !!window.__tp.shown[l]", arg=label, timeout=self.timeout,
                                         polling=250)
            first = await page.evaluate("(l) => (window.__tp.shown[l] - window.__tp.act) / 1000", label)
            self._record(f"new point: {kind}", first)
            await page.wait_for_function(f"(l) => {{ const r = ({READOUT_JS})(l); return !!r && "
                                         f"r[0].includes(' on {n_full} examples') && !r[0].includes('refining'); }}",
                                         arg=label, timeout=self.timeout, polling=500)
            caption, value = await page.evaluate(READOUT_JS, label)
            n = int(re.search(r" on (\d+) examples", caption).group(1))
            self.points.append({"session": self.label, "kind": kind, "task": self.task, "ffn_pct": target,
                                "n": n, "shown": value, "first_s": round(first, 3),
                                "final_s": round(time.perf_counter() - t_press, 3)})
            await self.shot(f"prune-{target}")
        except Exception as exc:  # noqa: BLE001
            await self.shot(f"stuck-{target}")
            self.broken = f"{kind} point: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self._record(f"new point: {kind}", None, self.broken)
