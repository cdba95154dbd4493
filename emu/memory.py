"""A guest's memory map: pages mapped with permissions, and host reads and writes that never
touch an unmapped page."""

from __future__ import annotations

import ctypes

import unicorn
from unicorn import unicorn_const as uc_const
from unicorn.unicorn_py3.unicorn import uclib

from emu.elf import PAGE_SIZE, Perm


class GuestMemoryError(Exception):
    """The host tried to read or write guest memory that is not mapped."""


def _page_floor(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _page_ceil(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class GuestMemory:
    """The memory map of one Unicorn engine (which pages are mapped, with which permissions)."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self._uc = uc
        self._pages: dict[int, Perm] = {}
        self._volatile: set[int] = set()
        """Pages that can change after load: writable ones, and every page the host mapped
        after `seal()` or wrote into (a snapshot of the engine copies exactly these)."""
        self._sealed = False
        self._runs: list[tuple[int, int]] | None = None
        self._backing: dict[int, int] = {}
        """page -> its host address, for pages mapped from host buffers (`_map_run`)"""
        self._buffers: list[ctypes.Array[ctypes.c_char]] = []
        """The host buffers: they live as long as the engine that maps them."""
        self._buffer = ctypes.create_string_buffer(PAGE_SIZE)

    def seal(self) -> None:
        """The image is loaded: pages mapped from now on belong to the host (IPC buffer, envelope, stack)."""
        self._sealed = True

    def volatile_runs(self) -> list[tuple[int, int]]:
        """(address, size) of each run of contiguous volatile pages, in address order."""
        if self._runs is None:
            runs: list[tuple[int, int]] = []
            for page in sorted(self._volatile):
                if runs and runs[-1][0] + runs[-1][1] == page:
                    runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE)
                else:
                    runs.append((page, PAGE_SIZE))
            self._runs = runs
        return self._runs

    def _touch(self, address: int, size: int) -> None:
        pages = range(_page_floor(address), address + size, PAGE_SIZE)
        if not self._volatile.issuperset(pages):
            self._volatile.update(pages)
            self._runs = None

    def map(self, address: int, size: int, perms: Perm, data: bytes = b"") -> None:
        """Map [address, address+size) page-aligned with `perms` and copy `data` to `address`.

        Pages already mapped (a page shared by two segments) keep their mapping and get the
        union of both permissions.
        """
        start, end = _page_floor(address), _page_ceil(address + max(size, len(data)))
        run_start: int | None = None  # a run of new pages is mapped in one call (a stack is many)
        for page in range(start, end + PAGE_SIZE, PAGE_SIZE):
            old = self._pages.get(page) if page < end else perms
            if old is None:
                run_start = page if run_start is None else run_start
                continue
            if run_start is not None:
                self._map_run(run_start, page - run_start, perms)
                self._pages.update(dict.fromkeys(range(run_start, page, PAGE_SIZE), perms))
                if self._sealed or perms & Perm.W:
                    self._touch(run_start, page - run_start)
                run_start = None
            if page < end and old | perms != old:
                self._uc.mem_protect(page, PAGE_SIZE, int(old | perms))
                self._pages[page] = old | perms
                if perms & Perm.X:
                    self._backing.pop(page, None)  # code: host writes must go through the engine
                if perms & Perm.W:
                    self._touch(page, PAGE_SIZE)
        if data:
            self._uc.mem_write(address, bytes(data))
            if self._sealed:
                self._touch(address, len(data))

    def _map_run(self, address: int, size: int, perms: Perm) -> None:
        """Map new pages; pages that hold no code live in a host buffer (`mem_map_ptr`), so the
        host reads, writes and compares them without a call into the engine."""
        if perms & Perm.X:
            self._uc.mem_map(address, size, int(perms))
            return
        buffer = ctypes.create_string_buffer(size)
        self._uc.mem_map_ptr(address, size, int(perms), ctypes.addressof(buffer))
        base = ctypes.addressof(buffer)
        self._buffers.append(buffer)
        for offset in range(0, size, PAGE_SIZE):
            self._backing[address + offset] = base + offset

    def host_address(self, address: int, size: int) -> int | None:
        """Where [address, address+size) lies in host memory, if it lies in one host buffer."""
        first = self._backing.get(address & ~(PAGE_SIZE - 1))
        if first is None:
            return None
        last_page = (address + size - 1) & ~(PAGE_SIZE - 1)
        last = self._backing.get(last_page)
        if last is None or last - first != last_page - (address & ~(PAGE_SIZE - 1)):
            return None
        return first + (address & (PAGE_SIZE - 1))

    def is_mapped(self, address: int, size: int) -> bool:
        if size <= 0:
            return True
        first = address & ~(PAGE_SIZE - 1)
        if first == (address + size - 1) & ~(PAGE_SIZE - 1):
            return first in self._pages  # within one page: the usual case (IPC buffer, log text)
        return all(page in self._pages for page in range(_page_floor(address), address + size, PAGE_SIZE))

    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at `address`, through one buffer kept for the purpose (grown as needed)."""
        if not self.is_mapped(address, size):
            raise GuestMemoryError(f"read of {size} bytes at {address:#x} touches unmapped memory")
        host = self.host_address(address, size)
        if host is not None:
            return ctypes.string_at(host, size)
        if size > len(self._buffer):
            self._buffer = ctypes.create_string_buffer(size)
        status = uclib.uc_mem_read(self._uc._uch, address, self._buffer, size)
        if status != uc_const.UC_ERR_OK:
            raise unicorn.UcError(status)
        return ctypes.string_at(self._buffer, size)

    def write(self, address: int, data: bytes) -> None:
        size = len(data)
        if not self.is_mapped(address, size):
            raise GuestMemoryError(f"write of {size} bytes at {address:#x} touches unmapped memory")
        host = self.host_address(address, size)
        if host is not None:
            ctypes.memmove(host, bytes(data), size)
        else:
            status = uclib.uc_mem_write(self._uc._uch, address, bytes(data), size)
            if status != uc_const.UC_ERR_OK:
                raise unicorn.UcError(status)
        if (
            address & ~(PAGE_SIZE - 1) not in self._volatile
            or (address + size - 1) & ~(PAGE_SIZE - 1) not in self._volatile
        ):
            self._touch(address, size)

    def regions(self) -> list[tuple[int, int, Perm]]:
        """(start, size, permissions) of each run of adjacent mapped pages with equal permissions,
        in address order."""
        runs: list[tuple[int, int, Perm]] = []
        for page in sorted(self._pages):
            perms = self._pages[page]
            if runs and runs[-1][0] + runs[-1][1] == page and runs[-1][2] == perms:
                start, size, _ = runs[-1]
                runs[-1] = (start, size + PAGE_SIZE, perms)
            else:
                runs.append((page, PAGE_SIZE, perms))
        return runs
