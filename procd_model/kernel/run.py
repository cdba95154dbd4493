"""The run loop: turns of guests and actors from the run queue, and interrupts and timers that
come due (at block boundaries, or when idle time jumps to them)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from emu.cpu import Fault, FaultCause, TrapKind
from emu.events import IRQ, KERNEL_PID
from emu.events import MILLICYCLES_PER_CYCLE as MILLI
from procd_model import costs
from procd_model.abi import IPC_BUFFER_SIZE, TIMER_EVENT, KernelEvent, NotifyBit
from procd_model.kernel import ipc, lifecycle, notify, sched, syscalls
from procd_model.kernel.outcome import Done, Outcome, StopReason, SyscallArgs
from procd_model.kernel.state import ActorContext, GuestContext, Interrupt, Process, RunState
from procd_model.messages import Message

if TYPE_CHECKING:
    from procd_model.kernel.core import Kernel


def fire_next(k: Kernel) -> None:
    """Deliver the earliest interrupt or timer (its time has come, or the next block would pass it)."""
    at, _, event = heapq.heappop(k.state.timed)
    if isinstance(event, Interrupt):
        if k.trace.recording:
            k.trace.emit(IRQ, KERNEL_PID, line=event.line, notification=event.notification, scheduled=at // MILLI)
        notify.signal(k, k.state.notifications[event.notification], NotifyBit.IRQ)
        return
    endpoint = k.state.endpoints.get(event.endpoint)
    if endpoint is not None:
        payload = TIMER_EVENT.pack(cookie=event.cookie, ticks=sched.monotonic_ticks(k))
        ipc.kernel_message(k, endpoint, KernelEvent.TIMER, payload, cookie=event.cookie)


def _fire_due(k: Kernel) -> None:
    while k.state.timed and k.state.timed[0][0] <= k.state.clock:
        fire_next(k)


def run(k: Kernel, max_instructions: int, *, jump_to_events: bool = True) -> StopReason:
    """Run until every process is blocked or dead, the limit is reached, or the root exits (see Kernel.run)."""
    state = k.state
    while state.halt is None:
        _fire_due(k)
        if k.debug is not None:
            k.debug.poll(state.last_ran)
            if _killed(k):
                continue  # the loop ends on the halt
        if not state.run_queue:
            next_event = sched.next_timed(k)
            if next_event is None:
                return StopReason("idle")
            if not jump_to_events:
                return StopReason("idle", "an interrupt or timer is pending")
            sched.idle_until(k, next_event)
            continue
        proc = state.procs[state.run_queue.popleft()]
        if proc.state is not RunState.READY:
            continue
        if isinstance(proc.context, GuestContext):
            _run_guest(k, proc, proc.context, max_instructions)
        else:
            _run_actor(k, proc, proc.context)
    return state.halt


def _run_guest(k: Kernel, proc: Process, context: GuestContext, max_instructions: int) -> None:
    """One turn: run until the process blocks, dies, yields or has used a whole quantum."""
    cpu, state = context.cpu, k.state
    sched.switch_to(k, proc)
    if k.debug is not None:
        k.debug.turn(proc)
    turn_end = cpu.cost + (k.quantum if state.turn_left is None else state.turn_left)
    state.turn_left = None
    timed = state.timed
    syscall_trap, budget_trap = TrapKind.SYSCALL, TrapKind.BUDGET
    while state.halt is None:
        remaining = max_instructions - state.icount
        cost_before = cpu.cost
        if remaining <= 0:
            state.run_queue.appendleft(proc.pid)
            state.turn_left = turn_end - cost_before
            sched.halt(k, "instruction-limit", f"reached {max_instructions} instructions")
            return
        if cost_before >= turn_end:
            state.run_queue.append(proc.pid)
            return
        insn_budget = remaining
        if proc.fault_at is not None:
            insn_budget = min(insn_budget, proc.fault_at - cpu.retired)
            if insn_budget <= 0:
                injected = Fault(FaultCause.INJECTED, cpu.reg("rip"), None, f"at instruction {proc.fault_at}")
                lifecycle.fault(k, proc, injected)
                return
        budget = turn_end - cost_before
        event_bound = False
        if timed:  # the next interrupt or timer bounds the run (sched.next_timed, inline: a hot loop)
            next_event = timed[0][0]
            event_bound = next_event - state.clock <= budget
            budget = min(budget, max(next_event - state.clock, 0))
        before = cpu.retired
        trap = cpu.run(insn_budget, budget, exact=True, clock=state.clock, icount=state.icount)
        state.icount += cpu.retired - before
        state.clock += cpu.cost - cost_before
        kind = trap.kind
        if kind is syscall_trap:
            state.clock += costs.KERNEL_ENTRY_EXIT * MILLI  # sched.charge, inline
            if not _carry_on(k, proc, syscalls.guest_syscall(k, proc, context)):
                return
            continue
        if kind is TrapKind.DEBUG:
            assert k.debug is not None  # only a debugger sets breakpoints and steps
            k.debug.trapped(proc, cpu.debug.take_hit())
            _killed(k)
            continue  # the turn goes on exactly where it stopped
        if kind is TrapKind.FAULT:
            assert trap.fault is not None
            if k.debug is not None:
                k.debug.faulted(proc, trap.fault)
            lifecycle.fault(k, proc, trap.fault)
            return
        assert kind is budget_trap
        if proc.fault_at is not None and cpu.retired >= proc.fault_at:
            continue  # the injection check above kills it
        if state.icount < max_instructions:
            if event_bound:
                fire_next(k)  # the next block would reach the event's time
            state.run_queue.append(proc.pid)
            return
        # the limit check above reports it


def _killed(k: Kernel) -> bool:
    """Whether the run halted; the debugger's client killing it halts it."""
    if k.debug is not None and k.debug.killed:
        sched.halt(k, "killed", "the debugger's client killed the run")
    return k.state.halt is not None


def _run_actor(k: Kernel, proc: Process, context: ActorContext) -> None:
    sched.switch_to(k, proc)
    while k.state.halt is None:
        try:
            if not context.started:
                context.started = True
                request = next(context.program)
            else:
                result, context.result = context.result, None
                assert result is not None
                request = context.program.send(result)
        except StopIteration:
            lifecycle.exit_process(k, proc, 0)
            return
        if isinstance(request.message, Message):
            context.write_ipc(request.message.encode())
        elif request.message is not None:
            context.write_ipc(request.message[:IPC_BUFFER_SIZE])
        args = (tuple(request.args) + (0,) * 6)[:6]
        sched.charge(k, costs.KERNEL_ENTRY_EXIT)
        outcome = syscalls.syscall(k, proc, SyscallArgs(int(request.number), args))  # type: ignore[arg-type]
        if not _carry_on(k, proc, outcome):
            return


def _carry_on(k: Kernel, proc: Process, outcome: Outcome) -> bool:
    """Commit a completed syscall; False when the turn is over (blocked, gone or yielding)."""
    if not isinstance(outcome, Done):
        return False
    proc.context.commit(outcome)
    if outcome.end_turn:
        k.state.run_queue.append(proc.pid)
        return False
    return True
