"""``specfault fuzz``: random concurrent programs on the memory manager,
explored with the default portfolio, shrunk, saved as regressions.

* :mod:`.program` — a program as plain data (text and JSON forms);
* :mod:`.vocab` — the op vocabulary (one table);
* :mod:`.compile` — a program as the scenarios' own Scenario, plus the
  coverage probe;
* :mod:`.generate` — programs from a seed, and mutations;
* :mod:`.run` — one program's exploration (the unit of work) and shrinking;
* :mod:`.loop` — the feedback loop (corpus, coverage, batches, jobs);
* :mod:`.regress` — regression files and replay lines.

See docs/fuzz.md.
"""

from specfault.check.fuzz.program import Op, Program, ProgramError, ThreadProg
from specfault.check.fuzz.run import FuzzConfig, ProgramResult, run_program

__all__ = ["FuzzConfig", "Op", "Program", "ProgramError", "ProgramResult", "ThreadProg",
           "run_program"]
