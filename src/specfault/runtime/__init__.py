"""The op-yielding runtime: ops, tasks, what every driver shares (driver.py),
and the direct driver."""

from specfault.runtime.driver import switch
from specfault.runtime.fast import load_item, store_item, work
from specfault.runtime.ops import (
    AtomicAdd,
    Cmpxchg,
    KObject,
    Load,
    LoadItem,
    Op,
    Store,
    StoreItem,
    WaitUntil,
    Work,
    Yield,
)
from specfault.runtime.state import STATE, Deadlock, ModelBug, UseAfterFree, current
from specfault.runtime.task import Task

__all__ = [
    "STATE", "AtomicAdd", "Cmpxchg", "Deadlock", "KObject", "Load", "LoadItem", "ModelBug", "Op",
    "Store", "StoreItem", "Task", "UseAfterFree", "WaitUntil", "Work", "Yield", "current", "load_item", "store_item", "switch", "work",
]
