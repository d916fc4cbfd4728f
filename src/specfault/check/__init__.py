"""The interleaving explorer: strategies, scenarios, replay, minimisation."""

from specfault.check.engine import Execution, Failure
from specfault.check.explore import ExploreConfig, Result, explore, replay
from specfault.check.scenario import Env, Scenario, Thread, lookup, register
from specfault.check.schedule import Schedule, ScheduleError

__all__ = [
    "ExploreConfig", "Env", "Execution", "Failure", "Result", "Scenario", "Schedule", "ScheduleError",
    "Thread", "explore", "lookup", "register", "replay",
]
