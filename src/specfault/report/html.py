"""Self-contained HTML reports (``--html FILE`` on ``demo``, ``check``,
``bench``): one file that opens anywhere, offline.

Everything is inline: the CSS, the plots (SVG written by matplotlib, text as
paths, so no font is fetched), a few lines of script for the copy buttons.
Nothing refers to the network: no CDN, no web font, no external image.

What a reader finds: the tables of the run, the plots, the swimlanes of
counterexamples as a grid that scrolls (one column per CPU, a row per
step, every cell in full), and every replay command in full in a ``<code>``
block with a copy button (the Clipboard API where the page may use it, else
a selection and ``execCommand("copy")``, both offline).

Every figure in a table is the JSON figure of the same run: its cell
carries ``data-json`` (the path of the value in the ``--json`` output, keys
joined with ``/``), ``data-value`` (the value, as JSON writes it) and how
it is shown (``data-scale``, ``data-digits``, ``data-suffix``: the text is
``value * scale`` to ``digits`` decimals, then the suffix).  The whole
``--json`` output is embedded in ``<script type="application/json"
id="specfault-data">``.  Tests check both against ``--json``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSS = """
:root { --fg:#1d2430; --muted:#5b6675; --line:#d7dce3; --bg:#ffffff; --alt:#f5f7fa;
        --accent:#2457a6; --bad:#b3261e; --good:#1e7a34; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 0 1.5rem 3rem; max-width: 1400px; }
h1 { font-size: 1.6rem; margin: 1.4rem 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
p.lead { color: var(--muted); margin-top: 0; }
code, pre { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: var(--alt); border: 1px solid var(--line); padding: .5rem .7rem; overflow-x: auto; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.data { border-collapse: collapse; margin: .4rem 0 1rem; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: .2rem .6rem; text-align: right;
                              white-space: nowrap; }
table.data th { background: var(--alt); font-weight: 600; }
table.data td.text, table.data th.text { text-align: left; }
table.data caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: .2rem; }
.ok { color: var(--good); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
figure.plot { margin: .5rem 0 1.2rem; display: inline-block; max-width: 100%; vertical-align: top; }
figure.plot svg { max-width: 100%; height: auto; display: block; }
figure.plot figcaption, .note { color: var(--muted); font-size: 13px; }
.cmd { display: flex; align-items: flex-start; gap: .5rem; margin: .3rem 0 .8rem; }
.cmd code { display: block; flex: 1; background: var(--alt); border: 1px solid var(--line);
            padding: .4rem .6rem; white-space: pre-wrap; word-break: break-all; }
button.copy { font: inherit; font-size: 13px; padding: .3rem .7rem; border: 1px solid var(--accent);
              background: #fff; color: var(--accent); border-radius: 4px; cursor: pointer; }
button.copy.done { background: var(--accent); color: #fff; }
.swimlane-wrap { overflow: auto; max-height: 70vh; border: 1px solid var(--line); margin: .4rem 0 1rem; }
table.swimlane { border-collapse: collapse; font: 12.5px/1.35 ui-monospace, Menlo, Consolas, monospace; }
table.swimlane th { position: sticky; top: 0; background: #e9eef6; z-index: 1; text-align: left;
                    padding: .3rem .6rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.swimlane td { padding: .1rem .6rem; border-right: 1px solid var(--line); white-space: nowrap;
                    vertical-align: top; }
table.swimlane td.step { color: var(--muted); text-align: right; border-right: 2px solid var(--line); }
table.swimlane tr.pre td { border-top: 2px dashed var(--accent); }
table.swimlane tr.fail td { background: #fde7e5; }
table.swimlane tr.fail td.op { color: var(--bad); font-weight: 700; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; margin: .3rem 0 .8rem; }
dl.legend dt { font-family: ui-monospace, Menlo, Consolas, monospace; font-weight: 600; }
dl.legend dd { margin: 0; color: var(--muted); }
nav.toc a { margin-right: 1rem; }
"""

# the copy buttons: the Clipboard API when the page may use it, else a
# selection copied with execCommand (works from file:// and offline)
JS = """
(function () {
  function fallback(text) {
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok;
  }
  function done(btn, ok) {
    btn.textContent = ok ? "copied" : "select and copy";
    btn.classList.toggle("done", ok);
    setTimeout(function () { btn.textContent = "copy"; btn.classList.remove("done"); }, 1500);
  }
  document.querySelectorAll("button.copy").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var text = document.getElementById(btn.getAttribute("data-for")).textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done(btn, true); },
                                                 function () { done(btn, fallback(text)); });
      } else {
        done(btn, fallback(text));
      }
    });
  });
})();
"""


@dataclass(frozen=True)
class Fig:
    """A figure cell: ``value`` shown as ``value * scale`` to ``digits``
    decimals plus ``suffix``; ``path`` locates it in the run's JSON."""

    value: float | int
    path: str
    scale: float = 1.0
    digits: int = 2
    suffix: str = ""

    def text(self) -> str:
        return f"{self.value * self.scale:.{self.digits}f}{self.suffix}"


def fig(data: Any, path: str, scale: float = 1.0, digits: int = 2, suffix: str = "") -> Fig | str:
    """The figure at ``path`` of ``data`` (a cell), or ``-`` when it is null."""
    v = resolve(data, path)
    if v is None:
        return "-"
    return Fig(v, path, scale, digits, suffix)


def resolve(data: Any, path: str) -> Any:
    """``data`` at ``path`` (keys and list indexes joined with ``/``)."""
    cur = data
    for part in path.split("/") if path else []:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


class Report:
    """An HTML report under construction: add parts in order, then
    :meth:`write` (or :meth:`render`)."""

    def __init__(self, title: str, data: Any, lead: str = "") -> None:
        self.title = title
        self.data = data
        self.parts: list[str] = [f"<h1>{_e(title)}</h1>"]
        if lead:
            self.parts.append(f'<p class="lead">{_e(lead)}</p>')
        self._ids = 0

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    # -- parts --
    def h2(self, text: str) -> None:
        self.parts.append(f'<h2 id="{self._id("s")}">{_e(text)}</h2>')

    def h3(self, text: str) -> None:
        self.parts.append(f"<h3>{_e(text)}</h3>")

    def p(self, text: str, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{_e(text)}</p>")

    def raw(self, markup: str) -> None:
        """Markup made by the caller (escaped by it)."""
        self.parts.append(markup)

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{_e(text)}</pre>")

    def legend(self, items: Iterable[tuple[str, str]]) -> None:
        body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
        self.parts.append(f'<dl class="legend">{body}</dl>')

    def table(self, head: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "",
              text_cols: int = 0) -> None:
        """Cells are :class:`Fig` (a figure from the JSON, right-aligned),
        ``(text, css class)`` or text (left-aligned); ``text_cols`` is
        kept for callers (the first row decides each column's alignment)."""
        rows = [list(r) for r in rows]
        textual = [not isinstance(c, Fig) for c in rows[0]] if rows else [True] * len(head)
        out = ['<div class="table-wrap"><table class="data">']
        if caption:
            out.append(f"<caption>{_e(caption)}</caption>")
        out.append("<thead><tr>" + "".join(
            f'<th{" class=text" if i < len(textual) and textual[i] else ""}>{_e(h)}</th>'
            for i, h in enumerate(head)) + "</tr></thead><tbody>")
        for row in rows:
            cells = []
            for c in row:
                if isinstance(c, Fig):
                    cells.append(
                        f'<td class="fig" data-json="{_e(c.path)}" data-value="{_e(json.dumps(c.value))}" '
                        f'data-scale="{c.scale!r}" data-digits="{c.digits}" data-suffix="{_e(c.suffix)}">'
                        f"{_e(c.text())}</td>")
                elif isinstance(c, tuple):          # (text, css class)
                    cells.append(f'<td class="text {c[1]}">{_e(c[0])}</td>')
                else:
                    cells.append(f'<td class="text">{_e(c)}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        self.parts.append("".join(out))

    def plot(self, svg: str, caption: str) -> None:
        self.parts.append(f'<figure class="plot">{svg}<figcaption>{_e(caption)}</figcaption></figure>')

    def command(self, cmd: str, label: str = "") -> None:
        """A command in full, with a copy button."""
        cid = self._id("cmd")
        lab = f'<div class="note">{_e(label)}</div>' if label else ""
        self.parts.append(f'{lab}<div class="cmd"><code id="{cid}">{_e(cmd)}</code>'
                          f'<button class="copy" type="button" data-for="{cid}">copy</button></div>')

    def swimlane(self, heads: Sequence[str], rows: Iterable[tuple[int, str, int, str]], caption: str = "") -> None:
        """A counterexample's steps as a grid: a column per CPU (and RCU),
        a row per step; ``>>`` rows (preemptions) ruled, the ``!!`` row red."""
        out = []
        if caption:
            out.append(f'<div class="note">{_e(caption)}</div>')
        out.append('<div class="swimlane-wrap"><table class="swimlane"><thead><tr><th>step</th>'
                   + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>")
        n = len(heads)
        for i, mark, col, text in rows:
            cls = {"!!": ' class="fail"', ">>": ' class="pre"'}.get(mark, "")
            cells = ["<td></td>"] * n
            cells[col] = f'<td class="op">{_e(text)}</td>'
            out.append(f'<tr{cls}><td class="step">{i}{_e(mark)}</td>{"".join(cells)}</tr>')
        out.append("</tbody></table></div>")
        self.parts.append("".join(out))

    # -- output --
    def render(self) -> str:
        data = json.dumps(self.data, default=str, indent=None).replace("</", "<\\/")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{_e(self.title)}</title><style>{CSS}</style></head><body>"
                + "\n".join(self.parts)
                + f'\n<script type="application/json" id="specfault-data">{data}</script>'
                f"\n<script>{JS}</script></body></html>\n")

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.render(), encoding="utf-8")
        return p


# ------------------------------------------------------------------ bench
def bench_tables(r: Report, cmp: Any, data: dict[str, Any], prefix: str = "") -> None:
    """The comparison's main table and its aborts, figures from ``data``
    (``cmp.to_dict()``, found at ``prefix`` in the report's data)."""
    from specfault.sim.bench import ELAPSED, PROTOCOLS

    elapsed = cmp.workload in ELAPSED
    head = ["CPUs", "protocol", "elapsed ms" if elapsed else (
        "Mops/s" if cmp.workload == "mmap1" else "M faults/s"), "vs classic", "M faults/CPU-s",
        "fault p50 µs", "fault p99 µs", "mmap writer p99 µs", "mmap_lock wait p99 µs",
        "hold p99 µs", "aborts", "line transfers/fault"]
    order = sorted(range(len(cmp.runs)), key=lambda i: (cmp.runs[i].cpus, PROTOCOLS.index(cmp.runs[i].protocol)))
    rows = []
    for i in order:
        run = f"{prefix}runs/{i}"
        if elapsed:
            merit = fig(r.data, f"{run}/wall_us", 1e-3, 3)
        elif cmp.workload == "mmap1":
            merit = fig(r.data, f"{run}/ops_per_s", 1e-6, 2)
        else:
            merit = fig(r.data, f"{run}/faults_per_s", 1e-6, 2)
        rows.append([fig(r.data, f"{run}/cpus", 1, 0), data["runs"][i]["protocol"], merit,
                     fig(r.data, f"{prefix}ratios/{i}/vs_classic", 1, 2, "x"),
                     fig(r.data, f"{run}/faults_per_cpu_s", 1e-6, 2),
                     fig(r.data, f"{run}/fault_lat/p50", 1, 1), fig(r.data, f"{run}/fault_lat/p99", 1, 1),
                     fig(r.data, f"{run}/writer_lat/p99", 1, 1), fig(r.data, f"{run}/lock_wait/p99", 1, 1),
                     fig(r.data, f"{run}/lock_hold/p99", 1, 1), fig(r.data, f"{run}/abort_rate", 100, 2, "%"),
                     fig(r.data, f"{run}/transfers_per_fault", 1, 2)])
    r.table(head, rows, text_cols=0,
            caption="vs classic: the figure of merit over classic's at the same CPU count "
                    "(throughput, or 1/elapsed); latencies are simulated µs")
    arows = []
    for i in order:
        for reason in sorted(data["runs"][i]["aborts"]):
            arows.append([fig(r.data, f"{prefix}runs/{i}/cpus", 1, 0), data["runs"][i]["protocol"], reason,
                          fig(r.data, f"{prefix}runs/{i}/aborts/{reason}", 1, 0)])
    if arows:
        r.table(["CPUs", "protocol", "abort counter", "count"], arows, text_cols=0,
                caption="aborts and fallbacks by reason (Linux's counter names)")


def bench_plots(r: Report, cmp: Any) -> None:
    from specfault.sim import plots

    for svg, caption in plots.svgs(cmp):
        r.plot(svg, caption)


def bench_report(cmp: Any, command: str, trace: str | Path | None = None,
                 data: dict[str, Any] | None = None) -> Report:
    """The report of ``specfault bench``: ``data`` is the ``--json`` output
    of the same run (default ``cmp.to_dict()``)."""
    data = cmp.to_dict() if data is None else data
    params = ", ".join(f"{k}={v}" for k, v in cmp.params.items())
    r = Report(f"specfault bench: {cmp.workload}", data,
               f"simulated; {params}" if params else "simulated")
    r.command(command, "the command that produced this report")
    r.h2("Results")
    bench_tables(r, cmp, data)
    r.h2("Plots")
    bench_plots(r, cmp)
    if trace:
        r.h2("Trace")
        r.p("Every run of this report is also a trace: open it in ui.perfetto.dev (Open trace file) "
            "or chrome://tracing (Load). docs/reports.md says what each track and slice means.")
        r.command(str(trace), "trace file")
    return r


# ------------------------------------------------------------------ check
def counterexample(r: Report, ex: Any, schedule: Any, heading: str = "") -> None:
    """A failing execution: its violation, swimlane grid and replay command."""
    from specfault.check.report import swimlane_rows

    f = ex.failure
    if heading:
        r.h3(heading)
    if f is not None:
        r.raw(f'<p><span class="bad">VIOLATION {_e(f.kind)}</span>: {_e(f.message)}</p>')
        if f.site:
            r.p(f"model code: {f.site}", "note")
    r.p(f"{ex.steps} steps, {ex.preemptions} preemptions; '>>' marks a preemption (the previous "
        "actor could have gone on), '!!' the step that failed.", "note")
    heads, rows = swimlane_rows(ex)
    r.swimlane(heads, rows)
    r.command(schedule.replay_command(), "replay this schedule exactly")
    r.command(f"specfault.check.replay(scenario, {str(schedule)!r})", "or from Python")


def check_report(results: Sequence[Any], data: Any, command: str,
                 executions: dict[str, tuple[Any, Any]]) -> Report:
    """``specfault check`` over scenarios: ``data`` is the ``--json``
    output (a list, one entry per result); ``executions`` maps a failing
    scenario to its replayed (execution, schedule)."""
    r = Report("specfault check", data, f"{len(results)} scenario(s) explored")
    r.command(command, "the command that produced this report")
    rows = []
    for i, res in enumerate(results):
        verdict = ("OK", "ok") if res.ok else (f"FAIL ({res.failure.kind if res.failure else '?'})", "bad")
        rows.append([res.scenario, verdict, res.strategy, fig(data, f"{i}/schedules", 1, 0),
                     fig(data, f"{i}/complete", 1, 0), fig(data, f"{i}/pruned", 1, 0),
                     fig(data, f"{i}/steps", 1, 0), fig(data, f"{i}/elapsed", 1, 2),
                     "exhaustive" if res.exhausted else "budget"])
    r.table(["scenario", "verdict", "strategy", "schedules", "complete", "pruned", "steps", "seconds",
             "scope"], rows, text_cols=3)
    for name, (ex, sched) in executions.items():
        r.h2(f"Counterexample: {name}")
        counterexample(r, ex, sched)
    return r


def replay_report(ex: Any, sched: Any, data: Any) -> Report:
    """``specfault check --replay LINE``: the one execution."""
    r = Report(f"specfault check --replay: {sched.scenario}", data,
               "one schedule, replayed exactly")
    r.table(["steps", "preemptions"], [[fig(data, "steps", 1, 0), fig(data, "preemptions", 1, 0)]])
    if ex.failure is not None:
        counterexample(r, ex, sched)
    else:
        from specfault.check.report import swimlane_rows
        r.p("no violation", "ok")
        heads, rows = swimlane_rows(ex)
        r.swimlane(heads, rows)
        r.command(sched.replay_command(), "replay this schedule exactly")
    return r


def kill_report(kills: Sequence[Any], data: Any, command: str,
                executions: dict[str, tuple[Any, Any]]) -> Report:
    """``specfault check --mutants``: the kill table and each kill's
    counterexample."""
    r = Report("specfault check --mutants: the kill table", data,
               f"{sum(k.killed for k in kills)} of {len(kills)} mutants killed")
    r.command(command, "the command that produced this report")
    rows = []
    for i, k in enumerate(kills):
        rows.append([k.mutant, k.protocol, k.scenario if k.killed else ("SURVIVED", "bad"), k.strategy,
                     fig(data, f"{i}/schedules", 1, 0), fig(data, f"{i}/seconds", 1, 1)])
    r.table(["mutant", "protocol", "killed by scenario", "strategy", "schedules", "seconds"], rows,
            text_cols=4, caption="schedules: run by the portfolio until the kill (every strategy)")
    for name, (ex, sched) in executions.items():
        r.h2(f"Mutant {name}")
        counterexample(r, ex, sched)
    return r
