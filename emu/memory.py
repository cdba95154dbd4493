"""A guest's memory map: pages mapped with permissions, and host reads and writes that never
touch an unmapped page."""

from __future__ import annotations

import unicorn

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
                self._uc.mem_map(run_start, page - run_start, int(perms))
                self._pages.update(dict.fromkeys(range(run_start, page, PAGE_SIZE), perms))
                run_start = None
            if page < end and old | perms != old:
                self._uc.mem_protect(page, PAGE_SIZE, int(old | perms))
                self._pages[page] = old | perms
        if data:
            self._uc.mem_write(address, bytes(data))

    def is_mapped(self, address: int, size: int) -> bool:
        if size <= 0:
            return True
        return all(page in self._pages for page in range(_page_floor(address), address + size, PAGE_SIZE))

    def read(self, address: int, size: int) -> bytes:
        if not self.is_mapped(address, size):
            raise GuestMemoryError(f"read of {size} bytes at {address:#x} touches unmapped memory")
        return bytes(self._uc.mem_read(address, size))

    def write(self, address: int, data: bytes) -> None:
        if not self.is_mapped(address, len(data)):
            raise GuestMemoryError(f"write of {len(data)} bytes at {address:#x} touches unmapped memory")
        self._uc.mem_write(address, bytes(data))

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
