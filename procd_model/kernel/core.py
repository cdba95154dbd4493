"""The modelled EriX kernel: the object the world drives, holding the kernel's state.

The kernel's work lives in modules beside this one, as functions of the kernel:
`sched` (run queue, virtual time, timed events), `run` (the run loop), `syscalls` (syscall entry
and dispatch), `ipc` (endpoints), `notify` (notifications), `control` (kernel-control ops) and
`lifecycle` (create, start, exit, kill, bury). Its state is plain data (`state.KernelState`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.accounting import CpuModel
from emu.elf import ElfImage
from emu.events import KERNEL_PID, NOTIFY
from emu.events import MILLICYCLES_PER_CYCLE as MILLI
from emu.trace import Trace
from emu.world import Instrument
from procd_model import costs
from procd_model.actor import ActorProgram
from procd_model.caps import CapTable
from procd_model.cpu_model import default_cpu_model
from procd_model.kernel import checkpoint, lifecycle, notify, sched, syscalls
from procd_model.kernel import engines as engine_pool
from procd_model.kernel import run as run_loop
from procd_model.kernel.checkpoint import KernelCheckpoint
from procd_model.kernel.engines import EnginePool
from procd_model.kernel.inject import CrashWatch, DeathObserver, Injector, NoInjection, NoWatch
from procd_model.kernel.outcome import StopReason
from procd_model.kernel.state import (
    Endpoint,
    Interrupt,
    KernelState,
    Notification,
    Process,
    snapshot_state,
)
from procd_model.ops import NotifyRecord

if TYPE_CHECKING:
    from procd_model.debug import DebugPort


class Kernel:
    def __init__(
        self,
        trace: Trace | None = None,
        *,
        image_loader: Callable[[int], ElfImage | None] | None = None,
        cpu_model: CpuModel | None = None,
        quantum_cycles: int = costs.DEFAULT_QUANTUM_CYCLES,
        instrument: Instrument | None = None,
        injector: Injector | None = None,
        engines: EnginePool | None = None,
        crash_watch: CrashWatch | None = None,
    ) -> None:
        self.state = KernelState()
        self.engines = engines if engines is not None else engine_pool.SHARED
        """Where guests' engines come from and go back to (warm engines, see kernel/engines.py)."""
        self.instrument = instrument
        self.trace = trace if trace is not None else Trace()
        self.trace.bind_clock(lambda: self.state.icount, lambda: self.state.clock // MILLI)
        self.cpu_model = cpu_model if cpu_model is not None else default_cpu_model()
        self.quantum = quantum_cycles * MILLI
        self.image_loader = image_loader
        self.injector: Injector = injector if injector is not None else NoInjection()
        self.observers: list[DeathObserver] = []
        self.debug: DebugPort | None = None
        """Set by `procd_model.debug.attach_debugger`: the run loop then stops for a gdb client."""
        self.crash_watch: CrashWatch = crash_watch if crash_watch is not None else NoWatch()
        self.keep_dead = lifecycle.KEEP_DEAD
        """Dead processes kept in full in `procs` (older ones are forgotten, see lifecycle)."""
        self.keep_logs = syscalls.KEEP_LOGS
        """DEBUG_WRITE lines kept from the start and from the end of a run (see `syscalls.keep_log`)."""

    # ------------------------------------------------------------- the state

    @property
    def procs(self) -> dict[int, Process]:
        return self.state.procs

    @property
    def endpoints(self) -> dict[int, Endpoint]:
        return self.state.endpoints

    @property
    def notifications(self) -> dict[int, Notification]:
        return self.state.notifications

    @property
    def logs(self) -> list[str]:
        """Every DEBUG_WRITE line, whatever the trace level (scenarios check them)."""
        return self.state.logs

    @property
    def icount(self) -> int:
        """Instructions retired by every guest."""
        return self.state.icount

    @property
    def clock(self) -> int:
        """Virtual time in millicycles: guest instructions plus the kernel's modelled work."""
        return self.state.clock

    def snapshot(self) -> KernelState:
        """A copy of the kernel's state that later runs leave as it is (see `snapshot_state`)."""
        return snapshot_state(self.state)

    def checkpoint(self) -> KernelCheckpoint:
        """Everything needed to put this kernel back as it is now, guests' engines included
        (see kernel/checkpoint.py); `restore` puts it back, any number of times."""
        return checkpoint.take(self)

    def restore(self, saved: KernelCheckpoint) -> None:
        checkpoint.restore(self, saved)

    def discard(self, saved: KernelCheckpoint) -> None:
        """`saved` will not be restored again: the engines it held may serve other guests."""
        checkpoint.discard(self, saved)

    # ------------------------------------------------------------- world setup

    def observe_deaths(self, observer: DeathObserver) -> None:
        self.observers.append(observer)

    def new_endpoint(self, service: str = "") -> Endpoint:
        endpoint = Endpoint(self._take_obj(), service)
        self.state.endpoints[endpoint.obj] = endpoint
        return endpoint

    def new_notification(self) -> Notification:
        notification = Notification(self._take_obj())
        self.state.notifications[notification.obj] = notification
        return notification

    def _take_obj(self) -> int:
        obj = self.state.next_obj
        self.state.next_obj += 1
        return obj

    def spawn_actor(self, name: str, program: ActorProgram, caps: CapTable) -> Process:
        """A modelled peer, ready to run."""
        return lifecycle.spawn_actor(self, name, program, caps)

    def create_guest(self, name: str, image: ElfImage, envelope: bytes, caps: CapTable, endpoint: int = 0) -> Process:
        """A process running `image`, created but not started. Raises ImageLayoutError."""
        return lifecycle.create_guest(self, name, image, envelope, caps, endpoint)

    def make_root(self, proc: Process) -> None:
        """`proc` (pid 1, the first process created) is the root process: the run stops when it
        exits. A world names its root (rootd, or an image run alone); a kernel without one
        (a unit test's) runs until idle."""
        lifecycle.make_root(self, proc)

    def start(self, proc: Process, *, run_next: bool = False) -> None:
        lifecycle.start(self, proc, run_next=run_next)

    def monotonic_ticks(self) -> int:
        return sched.monotonic_ticks(self)

    # --------------------------------------------------------------- running

    def schedule_irq(self, notification: Notification, at_cycle: int, line: int = 0) -> None:
        """Raise interrupt `line` at virtual time `at_cycle`: the kernel sets NotifyBit.IRQ on
        `notification` at the first block boundary from which the next block would reach that
        time (or then, if the machine is idle until it)."""
        sched.schedule(self, at_cycle * MILLI, Interrupt(notification.obj, line))

    def run(self, max_instructions: int, *, jump_to_events: bool = True) -> StopReason:
        """Run until every process is blocked or dead, the limit is reached, or the root process
        (pid 1) exits ("root-exited"; see `lifecycle.exit_process`).

        When nothing is runnable, virtual time jumps to the next pending interrupt or timer and
        the run goes on; with `jump_to_events` False the run stops there instead ("idle", with
        the event still pending), so a harness can act between requests (`advance_to_next_event`)."""
        return run_loop.run(self, max_instructions, jump_to_events=jump_to_events)

    @property
    def event_pending(self) -> bool:
        """Whether an interrupt or a timer is scheduled and has not fired yet."""
        return bool(self.state.timed)

    def advance_to_next_event(self) -> bool:
        """Let virtual time pass, while nothing runs, up to the next pending interrupt or timer
        (it fires on the next `run`); False if none is pending."""
        next_event = sched.next_timed(self)
        if next_event is None:
            return False
        self.state.clock = max(self.state.clock, next_event)
        return True

    def idle_until(self, ticks: int) -> bool:
        """Let virtual time pass, while nothing runs, up to monotonic tick `ticks` or the next
        pending interrupt or timer, whichever comes first (an event fires on the next `run`);
        False if the clock is already there."""
        target = ticks * sched.millicycles_per_tick(self)
        next_event = sched.next_timed(self)
        if next_event is not None:
            target = min(target, next_event)
        if target <= self.state.clock:
            return False
        self.state.clock = target
        return True

    def signal(self, notification: Notification, bits: int) -> None:
        """NOTIFY `bits` on `notification` from outside the modelled processes (a test harness)."""
        record = NotifyRecord(notification.obj, bits)
        if self.trace.recording:
            self.trace.emit(NOTIFY, KERNEL_PID, record, notification=notification.obj, bits=bits)
        notify.signal(self, notification, bits)

    def release_engines(self) -> None:
        """The machine will not run again: every live guest's engine goes back to the pool (its
        process keeps a closed view with its counts, as a dead one does)."""
        lifecycle.release_engines(self)

    def terminate(self, pid: int) -> bool:
        """End the live guest `pid` from outside (as an operator's kill would): it dies KILLED
        and its supervisor gets CHILD_DIED. False if `pid` is no live guest."""
        target = lifecycle.live_guest(self, pid)
        if target is None:
            return False
        lifecycle.kill(self, target, by=KERNEL_PID)
        return True
