"""The EriX test images, spawned by the native procd through rootd's manifest."""

from __future__ import annotations

from emu.trace import Trace
from procd_model.abi import CRASH_RECORD, CrashEvent, NotifyBit, Role
from procd_model.abi import FaultKind as AbiFaultKind
from procd_model.rootd import ManifestEntry, Services
from procd_model.world import run_bootstrap

IRQ_AT = 400_000


def run(*entries: ManifestEntry) -> tuple[Trace, dict[str, int], str]:
    trace = Trace()
    outcome = run_bootstrap(trace, 50_000_000, manifest=entries, services=Services(irq_at_cycle=IRQ_AT))
    assert outcome.ok, outcome.detail
    pids = {e.fields["name"]: e.pid for e in trace.of_kind("process.create")}
    return trace, pids, outcome.detail


def logs_of(trace: Trace, pid: int) -> list[str]:
    return [e.fields["text"] for e in trace.of_kind("log") if e.pid == pid]


def test_fault_kill_is_reaped_reported_to_crashd_and_procd_keeps_serving() -> None:
    services = Services(irq_at_cycle=IRQ_AT)
    trace = Trace()
    outcome = run_bootstrap(
        trace,
        50_000_000,
        manifest=(
            ManifestEntry("phase0-fault-kill", Role.TEST, expect_exit=None, expect_fault="unmapped-write"),
            ManifestEntry("phase0-exit", Role.TEST),
        ),
        services=services,
    )
    assert outcome.ok, outcome.detail
    pids = {e.fields["name"]: e.pid for e in trace.of_kind("process.create")}
    (fault,) = trace.of_kind("fault")
    victim = pids["phase0-fault-kill"]
    assert fault.pid == victim and fault.fields["fault"] == "unmapped-write"
    procd_logs = logs_of(trace, pids["procd"])
    assert any(line.startswith(f"procd: child {victim} faulted UNMAPPED_WRITE at ") for line in procd_logs)
    assert f"procd: child {pids['phase0-exit']} exited 0" in procd_logs
    assert logs_of(trace, pids["phase0-exit"]) == ["phase0-exit: running"]
    # crashd got exactly one KILLED report, for the faulting child
    ((sequence, payload),) = services.crashd.records
    record = CRASH_RECORD.unpack(payload)
    assert sequence == 0 and record["pid"] == victim
    assert (record["event"], record["code"]) == (CrashEvent.KILLED, AbiFaultKind.UNMAPPED_WRITE)
    assert record["address"] == int(str(fault.fields["rip"]), 16)


def test_isolation_holds() -> None:
    trace, pids, _ = run(
        ManifestEntry("phase0-isolation-a", Role.TEST),
        ManifestEntry("phase0-isolation-b", Role.TEST, expect_exit=None, expect_fault="unmapped-read"),
    )
    (fault,) = trace.of_kind("fault")
    assert fault.pid == pids["phase0-isolation-b"]
    assert fault.fields["address"] == "0x1210000"
    assert "phase0-isolation-a: data intact" in logs_of(trace, pids["phase0-isolation-a"])
    # a was still running (yielding) when b faulted: its check came after b's death
    a_exit = next(e for e in trace.of_kind("process.exit") if e.pid == pids["phase0-isolation-a"])
    assert a_exit.seq > fault.seq


def test_lookup_client_registers_and_looks_up_at_named() -> None:
    trace, pids, _ = run(ManifestEntry("phase1-lookup-client", Role.TEST))
    assert "phase1-lookup-client: lookup ok" in logs_of(trace, pids["phase1-lookup-client"])
    sends = [e for e in trace.of_kind("ipc.recv") if e.pid == pids["named"]]
    assert [e.fields["op"] for e in sends] == ["REGISTER", "LOOKUP", "LOOKUP"]


def test_time_client_reads_monotonic_time_through_timed() -> None:
    trace, pids, _ = run(ManifestEntry("phase1-time-client", Role.TEST))
    timed_calls = [e for e in trace.of_kind("ipc.send") if e.pid == pids["timed"]]
    assert [e.fields["op"] for e in timed_calls] == ["READ_MONOTONIC_CLOCK"] * 2
    (line,) = [t for t in logs_of(trace, pids["phase1-time-client"]) if "ticks" in t]
    first, second = (int(x) for x in line.split("ticks ")[1].split(" -> "))
    assert second > first, "the client's work between the two reads spans at least one tick"


def test_irq_client_wakes_on_the_scheduled_interrupt() -> None:
    trace, pids, _ = run(ManifestEntry("phase2-irq-client", Role.TEST))
    (irq,) = trace.of_kind("irq")
    assert irq.cycle >= IRQ_AT
    client_exit = next(e for e in trace.of_kind("process.exit") if e.pid == pids["phase2-irq-client"])
    assert client_exit.fields["code"] == 0 and client_exit.cycle >= irq.cycle


def test_probe_completion_reaches_rootd_as_a_notification() -> None:
    trace = Trace()
    outcome = run_bootstrap(trace, 50_000_000, manifest=(ManifestEntry("phase0-probe", Role.TEST, await_probe=True),))
    assert outcome.ok, outcome.detail
    pids = {e.fields["name"]: e.pid for e in trace.of_kind("process.create")}
    report = next(e for e in trace.of_kind("ipc.recv") if e.pid == pids["procd"] and e.fields["op"] == "PROBE_COMPLETE")
    assert report.fields["sender"] == pids["phase0-probe"]
    notify = next(e for e in trace.of_kind("notify") if e.pid == pids["procd"] and e.seq > report.seq)
    assert notify.fields["bits"] == NotifyBit.PROBE_COMPLETE
    # procd told rootd with NOTIFY (asynchronous), not with a message rootd would have to receive
    assert not [e for e in trace.of_kind("ipc.send") if e.pid == pids["procd"] and e.seq > report.seq]
