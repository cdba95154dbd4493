"""Warm engines: a dead guest's engine goes back to a per-image pool instead of being closed.

A guest's engine is laid out the same way every time (the image's segments, the IPC buffer and
the envelope page, `rdi` at the envelope, `rsp` 0, `rip` at the entry), so the pool takes the
engine's state once, right after that layout (`EngineState`), and puts it back when the engine
is handed to the next guest of the same image: registers by `context_restore`, the writable and
kernel-owned pages that changed, the counters. Its translated code stays warm. Traces are
byte-identical to fresh engines (tests/test_engine_pool.py runs every scenario both ways).

An engine with probes or an instruction log attached (`--trace block`, profiles) is never
reused, and one a world snapshot still refers to is held until the snapshot no longer needs it
(see `pin`).
"""

from __future__ import annotations

from emu.accounting import CpuModel
from emu.cpu import GuestCpu
from emu.elf import PAGE_SIZE, ElfImage, Perm
from emu.engine_state import EngineState
from procd_model.abi import ENVELOPE_VADDR, IPC_BUFFER_VADDR
from procd_model.kernel.state import SYSCALL_ENTRY_REGISTERS

_Key = tuple[int, int]

DEFAULT_CAPACITY = 8
"""Idle engines kept per image (a dead engine beyond that is closed)."""
MAX_IDLE = 32
"""Idle engines kept in all (about 1 MiB resident each)."""


def fresh_engine(image: ElfImage, model: CpuModel) -> GuestCpu:
    """A new engine with a guest's layout: `image` loaded, the IPC buffer (read-write) and the
    envelope page (read-only, still empty) mapped, `rdi` pointing at the envelope, `rsp` 0; a
    stop at `syscall` reads the syscall's registers (SYSCALL_ENTRY_REGISTERS) with it."""
    cpu = GuestCpu(model)
    cpu.read_at_syscall(SYSCALL_ENTRY_REGISTERS)
    cpu.load(image)
    cpu.map(IPC_BUFFER_VADDR, PAGE_SIZE, Perm.R | Perm.W)
    cpu.map(ENVELOPE_VADDR, PAGE_SIZE, Perm.R)
    cpu.set_reg("rdi", ENVELOPE_VADDR)
    cpu.set_reg("rsp", 0)
    return cpu


class EnginePool:
    """Idle engines by (image, CPU model), each with the state it had when it was laid out."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        """Idle engines kept per image; 0 makes every guest's engine fresh and closes it at death."""
        self._idle: dict[_Key, list[GuestCpu]] = {}
        self._idle_total = 0
        """The engines in `_idle`, counted as they come and go (a release checks the bound)."""
        self._laid_out: dict[GuestCpu, tuple[_Key, EngineState]] = {}
        self._pinned: dict[GuestCpu, int] = {}
        """Engines checkpoints refer to, with how many checkpoints do."""
        self.reused = 0
        """Engines handed out warm (tests check the pool is exercised)."""
        self._held: dict[_Key, tuple[ElfImage, CpuModel]] = {}
        """Keeps each keyed image and CPU model alive, so that their ids are not reused."""

    def acquire(self, image: ElfImage, model: CpuModel, *, private: bool = False) -> GuestCpu:
        """An engine laid out for `image`: a warm one put back to its first state, or a new one.
        A `private` engine (one an instrument will hook) is always new and never reused, and so
        is one for an image with writable code: what the accounting learned about code a guest
        rewrote must not carry over to the next guest."""
        if private or image.writes_its_code:
            return fresh_engine(image, model)
        key = (id(image), id(model))  # by identity: hashing an image's symbols costs more than a reset
        idle = self._idle.get(key)
        if idle:
            cpu = idle.pop()
            self._idle_total -= 1
            cpu.restore_state(self._laid_out[cpu][1])
            self.reused += 1
            return cpu
        cpu = fresh_engine(image, model)
        if self.capacity > 0:
            self._held[key] = (image, model)
            self._laid_out[cpu] = (key, cpu.save_state())
        return cpu

    def release(self, cpu: GuestCpu) -> None:
        """The guest on `cpu` is dead: keep the engine for the next guest of its image, or close it."""
        if cpu in self._pinned:
            return  # a snapshot may bring this guest back; `unpin` decides later
        laid_out = self._laid_out.get(cpu)
        if laid_out is None or not cpu.can_restore(laid_out[1]):
            self._forget(cpu)  # hooked by an instrument, or its memory map grew (a lone image's stack)
            return
        key = laid_out[0]
        idle = self._idle.pop(key, [])
        self._idle[key] = idle  # the images used last come last: the first ones are evicted first
        if len(idle) >= self.capacity:
            self._forget(cpu)
            return
        idle.append(cpu)
        self._idle_total += 1
        while self._idle_total > MAX_IDLE:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        """Close an idle engine of the image used least recently (images come and go: a user's
        procd is a new image object each run) and forget that image once none is left."""
        key, idle = next((key, idle) for key, idle in self._idle.items() if idle)
        self._forget(idle.pop(0))
        self._idle_total -= 1
        if not idle:
            del self._idle[key]
            self._held.pop(key, None)

    def pin(self, cpu: GuestCpu) -> None:
        """A checkpoint refers to `cpu`: its death must not hand it to another guest."""
        self._pinned[cpu] = self._pinned.get(cpu, 0) + 1

    def unpin(self, cpu: GuestCpu, *, dead: bool) -> None:
        """One checkpoint less needs `cpu`; when none does, a dead guest's engine is released."""
        left = self._pinned.get(cpu, 0) - 1
        if left > 0:
            self._pinned[cpu] = left
            return
        self._pinned.pop(cpu, None)
        if dead:
            self.release(cpu)

    def idle_count(self) -> int:
        """Idle engines held (tests check the pool stays bounded)."""
        return self._idle_total

    def _forget(self, cpu: GuestCpu) -> None:
        self._laid_out.pop(cpu, None)
        if not cpu.closed:
            cpu.close()


SHARED = EnginePool()
"""The pool every kernel uses unless it is given its own: engines stay warm across runs in one process."""
