"""exec's address space (fs/exec.c, fs/binfmt_elf.c, arch/x86/entry/vdso/vma.c,
arch/x86/mm/mmap.c), without address-space randomisation (``setarch -R``).

:func:`load_elf_binary` builds a new mm the way Linux 6.18 does for an ELF
executable with an interpreter, in Linux's order:

1. ``bprm_mm_init``: the stack VMA, one page below ``STACK_TOP_MAX``, with
   ``VM_STACK_FLAGS`` (``VM_GROWSDOWN``); the argument pages are written
   into it (``copy_strings``: the VMA grows down over them);
2. ``setup_arg_pages``: the stack gets its final flags (no ``VM_EXEC``
   unless ``PT_GNU_STACK`` asks) and grows by 128 KiB more (``stack_expand``,
   at most ``RLIMIT_STACK``); ``mm->start_stack`` is set;
3. ``arch_pick_mmap_layout``: ``mmap_base`` is ``TASK_SIZE`` minus the stack
   rlimit plus the stack guard gap, clamped to [128 MiB, 5/6 of the space];
4. the executable's ``PT_LOAD`` segments (``elf_load``): an ``ET_DYN``
   executable goes at ``ELF_ET_DYN_BASE`` (two thirds of the space) with
   ``MAP_FIXED_NOREPLACE``, its first segment mapped over the image's whole
   span then trimmed (``elf_map``'s ``total_size``), later ones
   ``MAP_FIXED``; a segment's bss: the tail of its last file page zeroed
   (``padzero``: a write fault), whole bss pages mapped anonymous
   (``vm_brk_flags``);
5. the interpreter (``load_elf_interp``): its first segment at no hint —
   ``get_unmapped_area`` puts it right below ``mmap_base`` — the others
   ``MAP_FIXED`` after it;
6. the vDSO (``map_vdso``): one ``get_unmapped_area`` for ``[vvar]``,
   ``[vvar_vclock]`` and ``[vdso]`` together (right below the interpreter),
   installed as special mappings (``VM_DONTEXPAND``; the vvar pages
   ``VM_IO | VM_PFNMAP``);
7. the brk starts at the page-aligned end of the executable's bss.

The model has no ELF parser: an image is described by its ``PT_LOAD``
headers (:class:`ElfImage`), or rebuilt from a trace's mapping records.
A special mapping's pages are served by the anonymous fault path (the zero
page) — Linux maps the vDSO image and the vvar PFNs there; nothing the
model checks depends on those bytes.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from specfault.constants import (
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    PAGE_MASK,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_WRITE,
    TASK_SIZE,
)
from specfault.mm.access import user_access
from specfault.mm.fault import ACCESS_WRITE
from specfault.mm.mmap import (
    STACK_GUARD_GAP,
    _do_brk_flags,
    do_mmap,
    do_vmi_munmap,
    expand_stack_locked,
    get_unmapped_area,
    page_align,
)
from specfault.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from specfault.mm.mmu_gather import MmuGather
from specfault.mm.mprotect import mprotect_fixup
from specfault.mm.vma import (
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_IO,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SOFTDIRTY,
    VmArea,
)
from specfault.mm.vma_ops import vma_link

ET_EXEC, ET_DYN = 2, 3
#: STACK_TOP and STACK_TOP_MAX for a 47-bit address space, no randomisation
STACK_TOP = TASK_SIZE
#: ELF_ET_DYN_BASE (x86-64): two thirds of the address space
ELF_ET_DYN_BASE = TASK_SIZE // 3 * 2
#: VM_STACK_FLAGS on x86-64 (VM_STACK_DEFAULT_FLAGS = VM_DATA_DEFAULT_FLAGS)
VM_STACK_FLAGS = VM_GROWSDOWN | VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
#: setup_arg_pages() grows the stack by this much below the arguments
STACK_EXPAND = 131072
SIZE_128M = 128 << 20


@dataclass(frozen=True)
class ElfSegment:
    """One ``PT_LOAD`` program header: where it goes (``vaddr``, relative
    to the image's base for ET_DYN), how much of it comes from the file
    (``filesz`` bytes at ``offset``) and how much is memory (``memsz``;
    the rest is bss, zeroed), and its protection (PROT_*)."""

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    prot: int


@dataclass(frozen=True)
class ElfImage:
    """An ELF file as exec sees it: its path in the model's filesystem, its
    type (ET_DYN: position independent; ET_EXEC: at its link addresses),
    its PT_LOAD segments in address order, and the largest p_align."""

    path: str
    segments: tuple[ElfSegment, ...]
    e_type: int = ET_DYN
    align: int = PAGE_SIZE

    def total_mapping_size(self) -> int:
        """total_mapping_size(): from the first segment's page to the end of the last."""
        first, last = self.segments[0], self.segments[-1]
        return last.vaddr + last.memsz - (first.vaddr & PAGE_MASK)


@dataclass(frozen=True)
class VdsoImage:
    """The vDSO image's layout (Linux 6.18, x86-64): the vvar data pages,
    the vclock pages, the text."""

    vvar: int = 4 * PAGE_SIZE
    vvar_vclock: int = 2 * PAGE_SIZE
    text: int = 2 * PAGE_SIZE


VDSO_X86_64 = VdsoImage()

#: the flags of each special mapping (vdso_install_vvar_mapping, map_vdso)
VVAR_FLAGS = VM_READ | VM_MAYREAD | VM_IO | VM_DONTDUMP | VM_PFNMAP
VDSO_FLAGS = VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC


@dataclass
class ExecLayout:
    """Where exec put things."""

    stack: tuple[int, int] = (0, 0)
    load_bias: int = 0
    interp_base: int | None = None
    vdso: int = 0                     # start of [vvar]; [vdso] text at vdso + vvar sizes
    start_brk: int = 0
    mmap_base: int = 0
    maps: list[tuple[int, int]] = field(default_factory=list)


class ExecError(Exception):
    """The image cannot be loaded (a segment overlaps, no room): -errno."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(f"exec: {what}: {errno.errorcode.get(-err, err)}")
        self.err = err


def mmap_base(rlimit_stack: int | None) -> int:
    """x86 mmap_base() without randomisation: below the stack's room (its
    rlimit plus the guard gap), at least 128 MiB, at most 5/6 of the
    space (an unlimited stack: ``rlimit_stack`` None)."""
    gap = (1 << 64) - 1 if rlimit_stack is None else rlimit_stack
    if gap + STACK_GUARD_GAP < 1 << 64:
        gap += STACK_GUARD_GAP
    gap = min(max(gap, SIZE_128M), TASK_SIZE // 6 * 5)
    return page_align(TASK_SIZE - gap)


# ---------------------------------------------------------------- the stack
async def bprm_mm_init(mm: Any) -> VmArea:
    """__bprm_mm_init(): the temporary stack, one page at STACK_TOP_MAX
    (its vm_pgoff is vm_start >> PAGE_SHIFT, as insert_vm_struct gives an
    anonymous VMA)."""
    await mmap_write_lock(mm)
    start = STACK_TOP - PAGE_SIZE
    vma = VmArea.alloc(mm, start, STACK_TOP, VM_SOFTDIRTY | VM_STACK_FLAGS, start >> 12)
    await vma_link(mm, vma)
    mm.total_vm += 1
    await mmap_write_unlock(mm)
    return vma


async def copy_strings(mm: Any, arg_pages: int) -> None:
    """The argument and environment strings written into the top
    ``arg_pages`` pages of the stack (get_arg_page: a write fault each,
    growing the stack VMA down over them)."""
    for i in range(1, arg_pages + 1):
        await user_access(mm, STACK_TOP - i * PAGE_SIZE, ACCESS_WRITE)


async def setup_arg_pages(mm: Any, stack: VmArea, executable_stack: bool) -> None:
    """setup_arg_pages() at STACK_TOP (no shift without randomisation):
    final flags, then 128 KiB more room below the arguments (at most
    RLIMIT_STACK)."""
    await mmap_write_lock(mm)
    flags = VM_SOFTDIRTY | VM_STACK_FLAGS | (VM_EXEC if executable_stack else 0)
    if stack.vm_flags != flags:
        tlb = MmuGather(mm)
        err, stack = await mprotect_fixup(mm, tlb, stack, mm.mm_mt.prev(stack.vm_start),
                                          stack.vm_start, stack.vm_end, flags)
        await tlb.finish()
        assert not err, "setup_arg_pages: mprotect_fixup of the stack failed"
    stack_size = stack.vm_end - stack.vm_start
    rlim = mm.rlimit_stack & PAGE_MASK
    stack_expand = min(rlim, stack_size + STACK_EXPAND)
    err = await expand_stack_locked(mm, stack, stack.vm_end - stack_expand)
    await mmap_write_unlock(mm)
    if err:
        raise ExecError(err, "setup_arg_pages")


# --------------------------------------------------------------- ELF images
async def vm_mmap(mm: Any, file: Any, addr: int, length: int, prot: int, flags: int,
                  off: int) -> int:
    """vm_mmap(): do_mmap under mmap_lock; the address or -errno."""
    await mmap_write_lock(mm)
    ret, _ = await do_mmap(mm, file, addr, length, prot, flags, off >> 12)
    await mmap_write_unlock(mm)
    return int(ret)


async def vm_munmap(mm: Any, start: int, length: int) -> int:
    await mmap_write_lock(mm)
    ret = await do_vmi_munmap(mm, start, length)
    await mmap_write_unlock(mm)
    return int(ret)


async def vm_brk_flags(mm: Any, addr: int, length: int, flags: int) -> int:
    """vm_brk_flags(): anonymous memory at exactly [addr, addr+length)
    (a bss), merged with an anonymous neighbour of the same flags."""
    if not length:
        return 0
    await mmap_write_lock(mm)
    ret = await _do_brk_flags(mm, addr, length, flags)
    await mmap_write_unlock(mm)
    return ret


async def elf_map(mm: Any, file: Any, addr: int, seg: ElfSegment, prot: int, flags: int,
                  total_size: int) -> int:
    """elf_map(): map the file part of ``seg`` at ``addr``; the first
    segment of an image maps ``total_size`` (the whole image, so the
    search finds room for all of it) and unmaps what lies past itself."""
    size = page_align(seg.filesz + (seg.vaddr & ~PAGE_MASK))
    off = seg.offset - (seg.vaddr & ~PAGE_MASK)
    addr &= PAGE_MASK
    if not size:
        return addr
    if total_size:
        total_size = page_align(total_size)
        map_addr = await vm_mmap(mm, file, addr, total_size, prot, flags, off)
        if map_addr >= 0 and total_size > size:
            await vm_munmap(mm, map_addr + size, total_size - size)
        return map_addr
    return await vm_mmap(mm, file, addr, size, prot, flags, off)


async def elf_load(mm: Any, file: Any, addr: int, seg: ElfSegment, prot: int, flags: int,
                   total_size: int) -> int:
    """elf_load(): the segment's file part, then its bss: the rest of the
    last file page zeroed (padzero, a write fault), whole pages mapped
    anonymous (vm_brk_flags)."""
    if seg.filesz:
        map_addr = await elf_map(mm, file, addr, seg, prot, flags, total_size)
        if map_addr < 0:
            return map_addr
        zero_start = map_addr + (seg.vaddr & ~PAGE_MASK) + seg.filesz
        zero_end = map_addr + (seg.vaddr & ~PAGE_MASK) + seg.memsz
        if seg.memsz > seg.filesz and zero_start & ~PAGE_MASK and prot & PROT_WRITE:
            await user_access(mm, zero_start, ACCESS_WRITE, 0,
                              bytes(PAGE_SIZE - (zero_start & ~PAGE_MASK)))     # padzero()
    else:
        map_addr = zero_start = addr & PAGE_MASK
        zero_end = zero_start + (seg.vaddr & ~PAGE_MASK) + seg.memsz
    if seg.memsz > seg.filesz:
        zs, ze = page_align(zero_start), page_align(zero_end)
        err = await vm_brk_flags(mm, zs, ze - zs, VM_EXEC if prot & PROT_EXEC else 0)
        if err:
            return err
    return map_addr


async def load_image(mm: Any, file: Any, image: ElfImage, load_bias: int | None) -> int:
    """Map ``image``'s segments and return its load bias.  ``load_bias``
    None: an interpreter — its first segment at no hint (get_unmapped_area
    decides), the others at fixed offsets from it; else the first at
    ``load_bias + vaddr`` with MAP_FIXED_NOREPLACE, the others MAP_FIXED."""
    total = image.total_mapping_size() if image.e_type == ET_DYN else 0
    bias = load_bias
    for i, seg in enumerate(image.segments):
        if i == 0 and bias is None:
            addr, flags = 0, MAP_PRIVATE                      # load_addr = -vaddr
        elif i == 0:
            addr, flags = bias + seg.vaddr, MAP_PRIVATE | MAP_FIXED_NOREPLACE
        else:
            assert bias is not None
            addr, flags = bias + seg.vaddr, MAP_PRIVATE | MAP_FIXED
        got = await elf_load(mm, file, addr, seg, seg.prot, flags, total if i == 0 else 0)
        if got < 0:
            raise ExecError(got, f"{image.path} segment {i} at {addr:#x}")
        if i == 0:
            bias = got - (seg.vaddr & PAGE_MASK)
    assert bias is not None
    return bias


# ----------------------------------------------------------------- the vDSO
async def map_vdso(mm: Any, image: VdsoImage) -> int:
    """map_vdso(): one search for the vvar pages and the text together,
    then the special mappings.  Returns the start of [vvar]."""
    size = image.vvar + image.vvar_vclock + image.text
    await mmap_write_lock(mm)
    addr = get_unmapped_area(mm, None, 0, size, 0, 0)
    if addr < 0:
        await mmap_write_unlock(mm)
        raise ExecError(addr, "map_vdso")
    text = addr + image.vvar + image.vvar_vclock
    await install_special_mapping(mm, text, image.text, VDSO_FLAGS, "[vdso]")
    await install_special_mapping(mm, addr, image.vvar, VVAR_FLAGS, "[vvar]")
    if image.vvar_vclock:
        await install_special_mapping(mm, addr + image.vvar, image.vvar_vclock, VVAR_FLAGS,
                                      "[vvar_vclock]")
    await mmap_write_unlock(mm)
    return int(addr)


async def install_special_mapping(mm: Any, addr: int, length: int, vm_flags: int,
                                  name: str) -> VmArea:
    """_install_special_mapping(): a VMA that never merges or grows
    (VM_DONTEXPAND), named in /proc (``vm_special``).  Caller holds
    mmap_lock for write."""
    vma = VmArea.alloc(mm, addr, addr + length, vm_flags | VM_DONTEXPAND | VM_SOFTDIRTY, 0)
    vma.vm_special = name
    await vma_link(mm, vma)
    mm.total_vm += length >> 12
    return vma


# ----------------------------------------------------------------- the whole
async def load_elf_binary(mm: Any, exe: ElfImage, exe_file: Any, interp: ElfImage | None,
                          interp_file: Any, *, arg_pages: int = 1, rlimit_stack: int | None = 8 << 20,
                          executable_stack: bool = False, vdso: VdsoImage | None = VDSO_X86_64,
                          load_bias: int | None = None) -> ExecLayout:
    """Lay out the fresh ``mm`` as exec does (see the module docstring).
    ``load_bias`` overrides where an ET_DYN executable goes.  The caller
    runs this as the exec'ing task, with ``mm`` its new, empty mm."""
    if arg_pages < 1:
        raise ValueError(f"load_elf_binary: arg_pages must be at least 1, not {arg_pages}")
    if not exe.segments or (interp is not None and not interp.segments):
        raise ValueError("load_elf_binary: an image without PT_LOAD segments")
    out = ExecLayout()
    mm.rlimit_stack = (1 << 63) if rlimit_stack is None else rlimit_stack
    stack = await bprm_mm_init(mm)
    await copy_strings(mm, arg_pages)
    mm.start_stack = STACK_TOP - arg_pages * PAGE_SIZE
    stack = mm.find_vma(STACK_TOP - PAGE_SIZE)
    await setup_arg_pages(mm, stack, executable_stack)
    out.stack = (stack.vm_start, stack.vm_end)
    mm.mmap_base = out.mmap_base = mmap_base(rlimit_stack)
    if exe.e_type == ET_DYN:
        if load_bias is None:
            bias = ELF_ET_DYN_BASE
            if exe.align > PAGE_SIZE:
                bias &= ~(exe.align - 1)
            load_bias = (bias - exe.segments[0].vaddr) & PAGE_MASK
    else:
        load_bias = 0
    out.load_bias = await load_image(mm, exe_file, exe, load_bias)
    elf_brk = max(out.load_bias + s.vaddr + s.memsz for s in exe.segments)
    mm.start_brk = mm.brk = out.start_brk = page_align(elf_brk)
    if interp is not None:
        out.interp_base = await load_image(mm, interp_file, interp, None)
    if vdso is not None:
        out.vdso = await map_vdso(mm, vdso)
    out.maps = [(v.vm_start, v.vm_end) for v in mm.vmas()]
    return out


__all__ = ["ELF_ET_DYN_BASE", "ET_DYN", "ET_EXEC", "ElfImage", "ElfSegment", "ExecError",
           "ExecLayout", "STACK_TOP", "VDSO_X86_64", "VdsoImage", "load_elf_binary", "map_vdso",
           "mmap_base"]
