"""Compare a host record with a model record; explain the first divergence.

The verdict of one program is one of:

    agree       every step's result and state are equal
    diverge     the first difference, with both sides' values (a model bug,
                or an oracle bug -- never silently skipped)
    known       the first difference is one of KNOWN_DIFFERENCES (counted
                separately; the reason is in the entry and docs/fidelity.md)
    host-error  the host side could not run the program (infrastructure)

Comparison order within a step: result, then the set of live processes,
then per process (in number order) maps, pages, smaps, then (swap mode)
the step's counters.  "First" is the
earliest step, then that order -- so a divergence's *cause* is usually the
reported step, and later differences are consequences.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .program import Program, describe


@dataclass
class Divergence:
    step: int                 # -1: the initial state, before any step
    what: str                 # "result" | "procs" | "maps" | "pages" | "smaps" | "counters" | "error"
    proc: int | None
    host: Any
    model: Any
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KnownDifference:
    """A deliberate model/host difference: a name, why, and which divergences it explains."""

    name: str
    reason: str
    matches: Callable[[Program, Divergence], bool] = field(compare=False)


#: Deliberate differences.  Each must also be listed in docs/fidelity.md.
#: A divergence is "known" only if an entry's predicate matches it exactly;
#: anything else is reported as a divergence.
KNOWN_DIFFERENCES: list[KnownDifference] = []


@dataclass
class Verdict:
    status: str               # "agree" | "diverge" | "known" | "host-error"
    divergence: Divergence | None = None
    known: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "known": self.known, "message": self.message,
                "divergence": self.divergence.to_json() if self.divergence else None}


def first_divergence(host: dict[str, Any], model: dict[str, Any]) -> Divergence | None:
    """The first difference between two records of the same program, or None."""
    d = _state_diff(-1, host.get("initial"), model.get("initial"))
    if d:
        return d
    hsteps, msteps = host.get("steps", []), model.get("steps", [])
    for i in range(max(len(hsteps), len(msteps))):
        if i >= len(msteps) or i >= len(hsteps):
            break
        h, m = hsteps[i], msteps[i]
        if h["result"] != m["result"]:
            return Divergence(i, "result", None, h["result"], m["result"])
        d = _state_diff(i, h["state"], m["state"])
        if d:
            return d
        if h.get("counters") != m.get("counters"):
            return Divergence(i, "counters", None, h.get("counters"), m.get("counters"),
                              _counters_detail(h.get("counters"), m.get("counters")))
    if model.get("error") and not host.get("error"):
        i = model.get("error_step", len(msteps))
        return Divergence(i, "error", None, "ran", model["error"], "the model raised an exception")
    if len(hsteps) != len(msteps) and not host.get("error"):
        return Divergence(min(len(hsteps), len(msteps)), "error", None, len(hsteps), len(msteps),
                          "the records have different lengths")
    return None


def _state_diff(step: int, h: Any, m: Any) -> Divergence | None:
    if h is None or m is None:
        return None if h is m else Divergence(step, "error", None, h is not None, m is not None,
                                             "one side has no state")
    if sorted(h) != sorted(m):
        return Divergence(step, "procs", None, sorted(h, key=int), sorted(m, key=int))
    for p in sorted(h, key=int):
        for what in ("maps", "pages", "smaps"):
            hv, mv = h[p][what], m[p][what]
            if hv != mv:
                return Divergence(step, what, int(p), hv, mv, _detail(what, hv, mv))
    return None


def _counters_detail(h: dict[str, int] | None, m: dict[str, int] | None) -> str:
    if h is None or m is None:
        return "one side recorded no counters (swap mode on one side only)"
    return "; ".join(f"{k} host {h.get(k)} model {m.get(k)}" for k in sorted(set(h) | set(m))
                     if h.get(k) != m.get(k))


def _detail(what: str, hv: list[str], mv: list[str]) -> str:
    if what == "pages":
        # window index -> relative page is done by the caller that knows the guard
        diffs = [(i, a, b) for i, (a, b) in enumerate(zip(hv, mv, strict=False)) if a != b]
        return "; ".join(f"[{i}] host {a or '-'!s} model {b or '-'!s}" for i, a, b in diffs[:8])
    only_h = [x for x in hv if x not in mv]
    only_m = [x for x in mv if x not in hv]
    return f"host only: {only_h}; model only: {only_m}"


def judge(prog: Program, host: dict[str, Any], model: dict[str, Any],
          known: list[KnownDifference] | None = None) -> Verdict:
    """The verdict for one program from its two records."""
    if host.get("error"):
        return Verdict("host-error", message=str(host["error"]))
    d = first_divergence(host, model)
    if d is None:
        return Verdict("agree")
    for k in KNOWN_DIFFERENCES if known is None else known:
        if k.matches(prog, d):
            return Verdict("known", d, k.name, k.reason)
    return Verdict("diverge", d)


# ---- reporting ----


def page_name(prog: Program, index: int) -> int:
    """Window index -> page number relative to the region start."""
    return index - prog.guard


def format_divergence(prog: Program, verdict: Verdict, host: dict[str, Any] | None = None,
                      model: dict[str, Any] | None = None) -> str:
    """A human-readable account: the program with the diverging step marked, both sides' values."""
    d = verdict.divergence
    lines = []
    if verdict.status == "known":
        lines.append(f"KNOWN DIFFERENCE {verdict.known}: {verdict.message}")
    if d is None:
        lines.append(f"{verdict.status}: {verdict.message}")
        return "\n".join(lines)
    where = "initial state" if d.step < 0 else f"step {d.step}"
    proc = "" if d.proc is None else f" of process {d.proc}"
    lines.append(f"first divergence at {where}: {d.what}{proc}")
    lines.append("program:")
    lines.append(f"  region={prog.region} guard={prog.guard} files={[f['size'] for f in prog.files]}")
    for i, s in enumerate(prog.steps):
        mark = ">>" if i == d.step else "  "
        lines.append(f"{mark}{i:3d} {describe(s)}")
        if d.step >= 0 and i == d.step:
            break
    if d.what == "pages":
        diffs = [(i, a, b) for i, (a, b) in enumerate(zip(d.host, d.model, strict=False)) if a != b]
        lines.append("pages that differ (page: host | model):")
        for i, a, b in diffs:
            lines.append(f"  {page_name(prog, i):4d}: {a or '-':10s} | {b or '-'}")
    elif isinstance(d.host, list) and isinstance(d.model, list):
        lines.append("host:")
        lines += [f"  {x}" for x in d.host] or ["  (none)"]
        lines.append("model:")
        lines += [f"  {x}" for x in d.model] or ["  (none)"]
    else:
        lines.append(f"host:  {d.host}")
        lines.append(f"model: {d.model}")
    if d.step >= 0 and host and model and d.what != "result":
        for side, rec in (("host", host), ("model", model)):
            steps = rec.get("steps", [])
            if d.step < len(steps):
                lines.append(f"{side} result of the step: {steps[d.step]['result']}")
    return "\n".join(lines)


def divergence_json(prog: Program, verdict: Verdict) -> str:
    return json.dumps({"program": prog.to_json(), "verdict": verdict.to_json()})
