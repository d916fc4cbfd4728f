"""exec's layout: Process.exec of a real executable (its PT_LOAD headers read
here, from this machine's /bin/cat and its interpreter) against what
``setarch -R cat /proc/self/maps`` shows the kernel made of it: the stack,
the executable, the interpreter right below mmap_base, the vDSO and vvar
pages below it, the brk start.

    7ffffffde000-7ffffffff000 [stack]   33 pages: 1 of arguments + 128 KiB
    ...
    7ffff7fca000-7ffff7fff000 ld.so     (total size, right below mmap_base)
    7ffff7fc2000-7ffff7fca000 [vvar] [vvar_vclock] [vdso]
    555555554000-...          cat       (ELF_ET_DYN_BASE), then [heap]
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

import specfault as sf
from specfault.mm.exec import ET_DYN, STACK_TOP, ElfImage, ElfSegment, mmap_base

PT_LOAD, PT_INTERP, PT_GNU_STACK = 1, 3, 0x6474E551


def read_elf(path: str) -> tuple[ElfImage, str | None, bool]:
    """The PT_LOAD headers, interpreter and executable-stack bit of a
    64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path}: not ELF64"
    e_type = struct.unpack_from("<H", data, 16)[0]
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    segs, interp, exstack, align = [], None, False, 4096
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, p_align = \
            struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            prot = (1 if p_flags & 4 else 0) | (2 if p_flags & 2 else 0) | (4 if p_flags & 1 else 0)
            segs.append(ElfSegment(p_vaddr, p_memsz, p_filesz, p_offset, prot))
            align = max(align, p_align)
        elif p_type == PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == PT_GNU_STACK:
            exstack = bool(p_flags & 1)
    return ElfImage(path, tuple(segs), e_type, align), interp, exstack


def host_maps(cat: str) -> list[tuple[int, int, str, int, str]]:
    out = subprocess.run(["setarch", "-R", cat, "/proc/self/maps"], env={}, capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        rows.append((lo, hi, parts[1], int(parts[2], 16), parts[5] if len(parts) > 5 else ""))
    return rows


def spans(rows: list[tuple[int, int, str, int, str]], name: str) -> tuple[int, int]:
    mine = [r for r in rows if r[4] == name]
    return min(r[0] for r in mine), max(r[1] for r in mine)


@pytest.mark.skipif(shutil.which("setarch") is None or shutil.which("cat") is None,
                    reason="needs setarch and cat")
def test_exec_layout_matches_the_kernel() -> None:
    cat = os.path.realpath(shutil.which("cat") or "")
    exe, interp_path, exstack = read_elf(cat)
    if exe.e_type != ET_DYN or interp_path is None:
        pytest.skip(f"{cat} is not a dynamically linked PIE")
    interp_real = os.path.realpath(interp_path)
    interp, _, _ = read_elf(interp_real)
    host = host_maps(cat)
    m = sf.Machine()
    m.create_file(cat, bytes(os.path.getsize(cat)))
    m.create_file(interp_real, bytes(os.path.getsize(interp_real)))
    p = m.spawn()
    lay = p.exec(exe, ElfImage(interp_real, interp.segments, interp.e_type, interp.align),
                 arg_pages=1, executable_stack=exstack)
    m.check()
    model = [(v.vm_start, v.vm_end) for v in p.mm.vmas()]
    names = {r[4] for r in host}
    for special in ("[stack]", "[vdso]", "[vvar]", "[vvar_vclock]"):
        if special not in names:
            continue
        (lo, hi), = [(r[0], r[1]) for r in host if r[4] == special]
        assert (lo, hi) in model, f"{special}: host {lo:#x}-{hi:#x} not in the model"
    # the executable and the interpreter cover the same ranges (ld.so later
    # splits them with RELRO mprotects; the union is what exec mapped)
    for path in (cat, interp_real):
        host_lo, host_hi = spans(host, path)
        mine = [v for v in p.mm.vmas() if v.vm_file is not None and v.vm_file.inode.path == path]
        assert (min(v.vm_start for v in mine), max(v.vm_end for v in mine)) == (host_lo, host_hi)
    assert lay.interp_base == spans(host, interp_real)[0]
    assert lay.mmap_base == mmap_base(8 << 20) == spans(host, interp_real)[1]
    if "[heap]" in names:
        assert spans(host, "[heap]")[0] == lay.start_brk
    assert lay.stack[1] == STACK_TOP
    maps = p.maps()
    assert "[stack]" in maps and "[vdso]" in maps and "[vvar]" in maps
    # VmFlags of the special mappings and the stack, as the kernel shows them
    flags = {tuple(s["VmFlags"]) for s in p.smaps() if s["start"] == lay.stack[0]}
    assert flags == {("rd", "wr", "mr", "mw", "me", "gd", "ac", "sd")}


def test_exec_replaces_the_address_space() -> None:
    m = sf.Machine()
    m.create_file("/bin/x", bytes(0x5000))
    p = m.spawn()
    t = p.thread()
    a = p.mmap(0, 4096, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.write(a, b"old")
    exe = ElfImage("/bin/x", (ElfSegment(0, 0x2000, 0x2000, 0, 5),
                              ElfSegment(0x2000, 0x3800, 0x1800, 0x2000, 3)))
    lay = p.exec(exe)
    # two segments, the bss, [vvar] [vvar_vclock] [vdso] (where the old
    # mapping was: right below mmap_base), the stack
    assert [v.vm_special or ("file" if v.vm_file else "anon") for v in p.mm.vmas()] == \
        ["file", "file", "anon", "[vvar]", "[vvar_vclock]", "[vdso]", "anon"]
    assert p.read(a & ~0xFFF, 3) == bytes(3)
    with pytest.raises(OSError):                      # the other thread went with the old mm
        t.read(a, 1)
    # the bss: the file page's tail was zeroed (a private copy), whole pages anonymous
    bias = lay.load_bias
    assert p.read(bias + 0x3800, 8) == bytes(8)
    assert p.pagemap(bias + 0x3000).present and not p.pagemap(bias + 0x3000).file_shared
    tail = p.mm.vma_lookup(bias + 0x4000)
    assert tail.vm_file is None and tail.vm_end == bias + 0x6000 == lay.start_brk
    assert p.brk(0) == lay.start_brk
    # the stack grows on a fault below it
    p.write(lay.stack[0] - 3 * 4096, b"s")
    assert p.mm.vma_lookup(lay.stack[0] - 3 * 4096).vm_end == STACK_TOP
    m.check()


def _fstype(path: str) -> str:
    best, fs = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt, kind = line.split()[1:3]
            if path.startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, kind
    return fs


CASES = [(4 << 20, 0), (3 << 20, 0), (2 << 20, 4096), (4 << 20, 1 << 20), (1 << 20, 0),
         (6 << 20, 2 << 20)]


def test_file_mappings_are_thp_aligned_as_on_ext4(tmp_path) -> None:
    """An ext4/xfs file's get_unmapped_area is thp_get_unmapped_area: a
    mapping that holds a whole aligned 2 MiB of the file lands at an
    address congruent to its offset modulo 2 MiB; smaller ones do not
    move.  The host (a file here, on ext4) and the model agree case by case."""
    import ctypes

    if _fstype(str(tmp_path)) not in ("ext4", "xfs"):
        pytest.skip(f"{tmp_path} is not on ext4 or xfs")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    host = []
    try:
        for length, off in CASES:
            a = libc.mmap(None, length, 1, 2, fd, off)
            host.append((a - off) % (2 << 20) == 0)
            libc.munmap(a, length)
    finally:
        os.close(fd)
    m = sf.Machine()
    m.create_file("/big", bytes(8 << 20))
    m.kernel.fs.inodes["/big"].thp_get_unmapped_area = True
    p = m.spawn()
    mfd = p.open("/big")
    model = []
    for length, off in CASES:
        # something 1 page long at the top first, so the top of the free
        # area is not already 2 MiB aligned by chance
        pad = p.mmap(0, 4096, sf.PROT_READ, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
        a = p.mmap(0, length, sf.PROT_READ, sf.MAP_PRIVATE, mfd, off)
        model.append((a - off) % (2 << 20) == 0)
        p.munmap(a, length)
        p.munmap(pad, 4096)
    assert model == [True, True, False, True, False, True]
    # the aligned cases must be aligned on the host too (the others may be
    # aligned by chance, as the free area's top decides)
    assert all(h for h, mm in zip(host, model, strict=True) if mm)
