"""Regression files and replay lines: a fuzz finding as plain data.

A finding is a program, the protocol and mutant it ran under, and the
failing schedule (the explorer's choices).  It prints as one replay line::

    specfault fuzz --replay 'PROGRAM @ PROTOCOL[+MUTANT] @ CHOICES'

(PROGRAM in its text form, CHOICES run-length encoded as in schedule
lines) and is saved as a JSON regression file, which
``tests/check/test_fuzz_regressions.py`` replays: the schedule must still
fail the same way under its mutant, and the program must pass under the
correct protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specfault.check.engine import Execution, replay_chooser
from specfault.check.fuzz.compile import build
from specfault.check.fuzz.program import Program, ProgramError
from specfault.check.schedule import ScheduleError, decode_choices, encode_choices

FORMAT = "specfault-fuzz-regression/1"
PROTOCOLS = ("classic", "speculative", "pervma", "dufour")


@dataclass
class Regression:
    program: Program
    protocol: str
    mutant: str | None
    choices: list[int]
    kind: str = ""
    message: str = ""

    def target(self) -> str:
        return self.protocol + (f"+{self.mutant}" if self.mutant else "")

    def line(self) -> str:
        return f"{self.program.text()} @ {self.target()} @ {encode_choices(self.choices)}"

    def replay_command(self) -> str:
        return f"specfault fuzz --replay '{self.line()}'"

    @classmethod
    def parse_line(cls, text: str) -> Regression:
        parts = [p.strip() for p in text.strip().split("@")]
        if len(parts) != 3:
            raise ProgramError("a replay line is 'PROGRAM @ PROTOCOL[+MUTANT] @ CHOICES'")
        prog = Program.parse(parts[0])
        protocol, _, mutant = parts[1].partition("+")
        _check_target(protocol, mutant or None)
        try:
            choices = decode_choices(parts[2])
        except ScheduleError as exc:
            raise ProgramError(str(exc)) from None
        return cls(prog, protocol, mutant or None, choices)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "program": self.program.to_json(),
                "program_text": self.program.text(), "protocol": self.protocol,
                "mutant": self.mutant, "schedule": encode_choices(self.choices),
                "failure": {"kind": self.kind, "message": self.message},
                "replay": self.replay_command()}

    @classmethod
    def from_json(cls, data: Any) -> Regression:
        try:
            if data.get("format") != FORMAT:
                raise ProgramError(f"not a fuzz regression (format {data.get('format')!r})")
            prog = Program.from_json(data["program"])
            _check_target(data["protocol"], data["mutant"])
            return cls(prog, data["protocol"], data["mutant"], decode_choices(data["schedule"]),
                       data["failure"]["kind"], data["failure"]["message"])
        except (KeyError, TypeError, AttributeError, ScheduleError) as exc:
            raise ProgramError(f"not a fuzz regression: {type(exc).__name__}: {exc}") from None

    def filename(self) -> str:
        return f"{self.mutant or 'correct'}-{self.protocol}-{self.program.digest()}.json"

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.filename()
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def replay(self, mutant: str | None | bool = True, strict: bool = True,
               step_limit: int = 10_000) -> Execution:
        """Run the schedule (under its own mutant; ``mutant=None``: under
        the correct protocol, then ``strict=False`` skips the choices that
        cannot run there)."""
        m = self.mutant if mutant is True else (mutant or None)
        scen = build(self.program, self.protocol, m)  # type: ignore[arg-type]
        return Execution(scen, step_limit).run(replay_chooser(self.choices, strict))


def _check_target(protocol: Any, mutant: Any) -> None:
    from specfault.check.mutants import MUTANTS

    if protocol not in PROTOCOLS:
        raise ProgramError(f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
    if mutant is not None and mutant not in MUTANTS:
        raise ProgramError(f"unknown mutant {mutant!r}")


def load(path: Path) -> Regression:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProgramError(f"{path}: {exc}") from None
    return Regression.from_json(data)
