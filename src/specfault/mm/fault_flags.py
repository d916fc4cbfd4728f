"""FAULT_FLAG_* and VM_FAULT_* (include/linux/mm_types.h), with Linux's values
(FAULT_FLAG_SPECULATIVE is the SPF patches' flag), and the x86 error-code
helpers every fault entry shares: the access kinds, the FAULT_FLAG_* of a
user access (``fault_flags``) and ``access_error``."""

from typing import Any

from specfault.mm.vma import VM_EXEC, VM_READ, VM_WRITE

FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_INSTRUCTION = 1 << 8
FAULT_FLAG_INTERRUPTIBLE = 1 << 9
FAULT_FLAG_UNSHARE = 1 << 10
FAULT_FLAG_ORIG_PTE_VALID = 1 << 11
FAULT_FLAG_VMA_LOCK = 1 << 12
FAULT_FLAG_SPECULATIVE = 1 << 13
FAULT_FLAG_DEFAULT = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_INTERRUPTIBLE

VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_HWPOISON = 0x000010
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_LOCKED = 0x000200
VM_FAULT_RETRY = 0x000400
VM_FAULT_FALLBACK = 0x000800
VM_FAULT_DONE_COW = 0x001000
VM_FAULT_COMPLETED = 0x004000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV | VM_FAULT_HWPOISON


ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC = 0, 1, 2


def access_error(access: int, vma: Any, prot: bool = False) -> bool:
    """x86 access_error(): may this access use this VMA at all?  ``prot`` is
    the PF_PROT bit (the PTE was present).  An instruction fetch from a
    page that is not present is treated as a read — it maps the page (zero
    page, fault-around...) and only the refault, now a protection fault on
    an NX PTE, is an error."""
    flags = vma.vm_flags
    if access == ACCESS_WRITE:
        return not flags & VM_WRITE
    if prot:
        return True          # read/exec of a present page: NX (or PROTNONE)
    return not flags & (VM_READ | VM_WRITE | VM_EXEC)   # vma_is_accessible()


_FLAGS = (FAULT_FLAG_DEFAULT | FAULT_FLAG_USER,
          FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | FAULT_FLAG_WRITE,
          FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | FAULT_FLAG_INSTRUCTION)


def fault_flags(access: int) -> int:
    """FAULT_FLAG_* for a user read, write or instruction fetch."""
    return _FLAGS[access]


def spf_fail(vmf: Any, reason: str) -> int:
    """Abort a speculative fault from inside a handler (memory.py): count
    ``reason`` (an ``SPF_ABORT_*`` name) and return VM_FAULT_RETRY, before
    any visible effect; the fault is redone classically."""
    vmf.mm.kernel.count(reason)
    return VM_FAULT_RETRY
