"""Kernel synchronisation primitives, built on runtime ops."""

from specfault.sync.rcu import Rcu
from specfault.sync.rwsem import RwSemaphore
from specfault.sync.spinlock import SpinLock

__all__ = ["Rcu", "RwSemaphore", "SpinLock"]
