"""The interleaving explorer: strategies, scenarios, replay, minimisation;
and the public API to check a protocol of your own (:mod:`specfault.check.api`,
whose names are re-exported here; its ``explore`` is ``check.api.explore``)."""

from specfault.check.api import (
    Checks,
    CondVar,
    Mutex,
    Semaphore,
    Shared,
    check,
    find_bug,
    join,
    program,
    spawn,
    verify,
)
from specfault.check.engine import Execution, Failure
from specfault.check.explore import ExploreConfig, Result, explore, replay
from specfault.check.scenario import Env, Scenario, Thread, lookup, register
from specfault.check.schedule import Schedule, ScheduleError

__all__ = [
    # your own protocol under the checker (specfault.check.api)
    "Checks", "CondVar", "Mutex", "Semaphore", "Shared", "check", "find_bug", "join", "program",
    "spawn", "verify",
    # the explorer
    "ExploreConfig", "Env", "Execution", "Failure", "Result", "Scenario", "Schedule", "ScheduleError",
    "Thread", "explore", "lookup", "register", "replay",
]
