"""Loop replay in the native clock: a lap whose timing repeats is counted without timing its
blocks, and that changes nothing: every stop sees the counts and the clock of timing every block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import loopgen
import pytest
from elfcraft import code_image
from hypothesis import event, given, settings
from hypothesis import strategies as st

from emu import accounting, insnlog
from emu.accounting import UNLIMITED, CpuModel
from emu.cpu import GuestCpu, TrapKind
from emu.elf import ElfImage, load_elf
from emu.trace import Trace
from procd_model.cpu_model import cpu_model
from procd_model.world import prepare_alone

ROOT = Path(__file__).resolve().parent.parent
COMPUTE = ROOT / "fixtures" / "elf" / "bench-compute.elf"

pytestmark = pytest.mark.skipif(not accounting.native_available(), reason="loop replay is in the native clock")

# 60 laps of an outer loop whose inner loop runs 1-32 times (a pseudo-random count), with a branch
# taken every fourth inner lap, a push/pop through memory, a branch that flips between outer laps,
# and a call: laps that repeat, laps that end early, and loops nested in loops.
#     mov r12, 0x600000; mov rsp, 0x600800; mov ebx, 12345; mov r13d, 60; xor r14d, r14d
#   outer: imul ebx, ebx, 1103515245; add ebx, 12345; mov ecx, ebx; shr ecx, 27; inc ecx
#   inner: mov eax, [r12+rcx*4]; add eax, ecx; mov [r12+rcx*4], eax; test ecx, 3; jnz skip
#          push rax; imul eax, eax, 3; pop rdx; add eax, edx
#   skip:  test ebx, 0x100; jz other; add r14, rax; jmp join
#   other: xor r14, rax
#   join:  dec ecx; jnz inner; call func; dec r13d; jnz outer
#          mov edi, r14d; mov eax, 9; syscall
#   func:  mov rax, r14; ror rax, 7; mov r14, rax; ret
NESTED_LOOPS = bytes.fromhex(
    "49c7c40000600048c7c400086000bb3930000041bd3c0000004531f669db6d4ec64181c33930000089d9c1e91b"
    "ffc1418b048c01c84189048cf7c1030000007507506bc0035a01d0f7c30001000074054901c6eb034931c6ffc9"
    "75d3e80f00000041ffcd75b64489f7b8090000000f054c89f048c1c8074989c6c3"
)
NESTED_LOOPS_ELF = load_elf(code_image(NESTED_LOOPS, data=bytes(4096)))

# 300 laps of an outer loop around an inner loop of exactly 12 loads: once both settle, one lap of
# the outer loop (its head, the inner block 11 more times, its tail) repeats as a whole.
#     mov r12, 0x600000; mov r13d, 300; xor r14d, r14d
#   outer: xor ecx, ecx; mov rax, r13
#   inner: mov rdx, [r12 + rcx*8]; add rax, rdx; inc ecx; cmp ecx, 12; jne inner
#          add r14, rax; dec r13d; jnz outer; mov edi, r14d; mov eax, 9; syscall
FIXED_NEST = load_elf(
    code_image(
        bytes.fromhex(
            "49c7c40000600041bd2c0100004531f631c94c89e8498b14cc4801d0ffc183f90c75f24901c641ffcd75e54489f7b8090000000f05"
        ),
        data=bytes(4096),
    )
)

Stop = tuple[str, int, int, int]
"""(trap kind, rip, instructions retired, millicycles) after one run."""


def _run_slices(
    model: CpuModel, replay: bool, slices: list[tuple[int, int | None, bool]], image: ElfImage
) -> tuple[list[Stop], int, int]:
    """Run `image` in `slices` (instruction budget, cycle budget, exact), then to its exit or a
    fault: every stop, rdi (the exit code) and the blocks replayed."""
    cpu = GuestCpu(model)
    cpu.load(image)
    cpu.replay_loops(replay)
    stops: list[Stop] = []
    for budget, cycles, exact in [*slices, (10**7, None, False)]:
        trap = cpu.run(budget, UNLIMITED if cycles is None else cycles * 1000, exact=exact)
        stops.append((trap.kind.value, trap.rip, cpu.retired, cpu.cost))
        if trap.kind is not TrapKind.BUDGET:
            break
    assert stops[-1][0] in (TrapKind.SYSCALL.value, TrapKind.FAULT.value)
    exit_code, replayed = cpu.reg("rdi"), cpu.replayed_blocks()
    cpu.close()
    return stops, exit_code, replayed


def _stops(
    model: CpuModel, replay: bool, slices: list[tuple[int, int | None, bool]], image: ElfImage = NESTED_LOOPS_ELF
) -> list[Stop]:
    """`_run_slices` of a guest whose loops replay whenever replay is on."""
    stops, exit_code, replayed = _run_slices(model, replay, slices, image)
    assert stops[-1][0] == TrapKind.SYSCALL.value and exit_code != 0
    assert (replayed > 0) == replay
    return stops


SLICES = st.lists(
    st.tuples(st.integers(1, 3000), st.none() | st.integers(1, 3000), st.booleans()), min_size=0, max_size=12
)


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
@settings(max_examples=40, deadline=None)
@given(slices=SLICES)
def test_every_stop_sees_what_timing_every_block_gives(cpu: str, slices: list[tuple[int, int | None, bool]]) -> None:
    model = cpu_model(cpu)
    assert _stops(model, True, slices) == _stops(model, False, slices)


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
@settings(max_examples=25, deadline=None)
@given(slices=SLICES)
def test_a_loop_around_a_replayed_loop_replays_as_a_whole_and_changes_nothing(
    cpu: str, slices: list[tuple[int, int | None, bool]]
) -> None:
    model = cpu_model(cpu)
    assert _stops(model, True, slices, FIXED_NEST) == _stops(model, False, slices, FIXED_NEST)


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
def test_the_outer_loop_closes_a_lap_holding_the_inner_block_many_times(cpu: str) -> None:
    guest = GuestCpu(cpu_model(cpu))
    guest.load(FIXED_NEST)
    assert guest.run(10**7).kind is TrapKind.SYSCALL
    # 300 outer laps of 13 blocks; replaying the inner loop alone would begin once per outer lap
    assert 0 < guest.loop_replays() < 30 and guest.replayed_blocks() > 0.9 * 300 * 13
    guest.close()


def test_a_whole_run_keeps_its_counts_with_replay() -> None:
    assert _stops(cpu_model("skylake"), True, []) == _stops(cpu_model("skylake"), False, [])


# mov rsi, 0x600000; L: mov rax, [rsi]; add rsi, 8; add rbx, rax; jmp L -- reads on past its page
WALK_OFF_THE_END = load_elf(code_image(bytes.fromhex("48c7c600006000488b064883c6084801c3ebf4"), data=bytes(4096)))


@pytest.mark.parametrize("laps", [None, 100, 511])
def test_a_fault_inside_a_replayed_loop_settles_as_when_timing_every_block(laps: int | None) -> None:
    """The 513th read faults in the middle of a lap; a budget may end an earlier run first."""

    def fault(replay: bool) -> tuple[object, ...]:
        cpu = GuestCpu(cpu_model("skylake"))
        cpu.load(WALK_OFF_THE_END)
        cpu.replay_loops(replay)
        if laps is not None:
            assert cpu.run(2 + 4 * laps).kind is TrapKind.BUDGET
        trap = cpu.run(10**6)
        seen = (trap.kind, trap.rip, cpu.retired, cpu.cost, cpu.reg("rsi"), cpu.replayed_blocks() > 0)
        cpu.close()
        return seen

    with_replay, without = fault(True), fault(False)
    assert with_replay[:5] == without[:5]
    assert with_replay[0] is TrapKind.FAULT and with_replay[4] == 0x601000
    assert with_replay[5] and not without[5]


@pytest.mark.parametrize("buffer", [20_000, None])
def test_an_instruction_trace_is_byte_identical_with_and_without_replay(
    monkeypatch: pytest.MonkeyPatch, buffer: int | None
) -> None:
    """Every instruction's line shows the counts and the clock before it; a tiny log buffer
    stops the guest inside blocks of replayed laps to drain it."""
    if buffer is not None:
        monkeypatch.setattr(insnlog, "BUFFER_BYTES", buffer)

    def traced(replay: bool) -> tuple[bytes, int, int]:
        cpu = GuestCpu(cpu_model("skylake"))
        cpu.load(NESTED_LOOPS_ELF)
        lines: list[bytes] = []
        seq = iter(range(1 << 30))
        cpu.attach_insn_log(1, lambda _count, jsonl, _text: lines.append(jsonl), lambda: next(seq), text=False)
        cpu.replay_loops(replay)
        assert cpu.run(10**7).kind is TrapKind.SYSCALL
        assert (cpu.replayed_blocks() > 0) == replay
        counts = (cpu.retired, cpu.cost)
        cpu.close()
        return b"".join(lines), *counts

    with_replay, without = traced(True), traced(False)
    assert with_replay == without
    assert with_replay[0].count(b"\n") == with_replay[1]


def _compute_trace(replay: bool) -> tuple[str, int, int, int]:
    trace = Trace(keep=True)
    kernel, proc = prepare_alone(trace, load_elf(COMPUTE))
    cpu = proc.cpu
    assert cpu is not None
    cpu.replay_loops(replay)
    before = cpu.replayed_blocks()  # the engine may be a warm one that ran guests before
    kernel.run(10**9)
    return trace.digest(), kernel.icount, kernel.clock, cpu.replayed_blocks() - before


def test_bench_compute_trace_is_byte_identical_with_and_without_replay() -> None:
    digest, icount, clock, replayed = _compute_trace(True)
    assert (digest, icount, clock) == _compute_trace(False)[:3]
    blocks = icount / 7  # bench-compute runs about 7 instructions a block
    assert replayed > 0.5 * blocks, "most of bench-compute's blocks are in loops that repeat"


def _program_image(program: tuple[tuple[loopgen.Item, ...], int]) -> ElfImage:
    return load_elf(code_image(loopgen.assemble(*program), data=bytes(4096)))


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
@settings(max_examples=60, deadline=None)
@given(program=loopgen.programs(), slices=SLICES)
def test_random_loop_programs_stop_alike_with_and_without_replay(
    cpu: str, program: tuple[tuple[loopgen.Item, ...], int], slices: list[tuple[int, int | None, bool]]
) -> None:
    image, model = _program_image(program), cpu_model(cpu)
    with_replay = _run_slices(model, True, slices, image)
    without = _run_slices(model, False, slices, image)
    event("replayed" if with_replay[2] else "nothing replayed")
    event(f"ends in a {with_replay[0][-1][0]}")
    assert with_replay[:2] == without[:2]


def test_the_random_programs_replay_their_loops() -> None:
    """The generator's loops are ones replay takes: a nest of fixed loops around unpredictable and
    periodic branches, loads, stores, calls and eliminated moves replays most of its blocks."""
    body = (
        loopgen.XORSHIFT,
        loopgen.Insn(bytes.fromhex("498b442408")),  # mov rax, [r12 + 8]
        loopgen.Branch(on_counter=True, bit=1, skipped=(loopgen.Call(),)),
        loopgen.Insn(bytes.fromhex("4889c2")),  # mov rdx, rax
        loopgen.Insn(bytes.fromhex("4989542410")),  # mov [r12 + 16], rdx
    )
    program = ((loopgen.Loop(12, (loopgen.Loop(12, (loopgen.Loop(12, body),)),)),), 7)
    image, model = _program_image(program), cpu_model("skylake")
    stops, _, replayed = _run_slices(model, True, [], image)
    # 12**3 inner laps of 2 blocks, or 4 when the branch calls: more than half of them replayed
    assert replayed > 0.5 * 12**3 * 3
    assert stops == _run_slices(model, False, [], image)[0]


def fallback_worker() -> None:
    """Runs in a child with the pure-Python clock: a JSON request per line (code, cpu, slices),
    answered by its stops and exit code."""
    assert not accounting.native_available()
    for line in sys.stdin:
        request = json.loads(line)
        image = load_elf(code_image(bytes.fromhex(request["code"]), data=bytes(4096)))
        slices = [tuple(s) for s in request["slices"]]
        stops, exit_code, _ = _run_slices(cpu_model(request["cpu"]), True, slices, image)
        print(json.dumps([stops, exit_code]), flush=True)


@pytest.fixture(scope="module")
def fallback() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, accounting.FORCE_PYTHON_ENV: "python"}
    child = subprocess.Popen(
        [sys.executable, "-c", "import test_loop_replay; test_loop_replay.fallback_worker()"],
        cwd=Path(__file__).parent,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield child
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=60) == 0


@pytest.mark.parametrize("cpu", ["skylake", "zen4"])
@settings(max_examples=40, deadline=None)
@given(program=loopgen.programs(), slices=SLICES)
def test_random_loop_programs_stop_alike_in_the_native_and_python_clocks(
    fallback: subprocess.Popen[str],
    cpu: str,
    program: tuple[tuple[loopgen.Item, ...], int],
    slices: list[tuple[int, int | None, bool]],
) -> None:
    code = loopgen.assemble(*program)
    stops, exit_code, _ = _run_slices(cpu_model(cpu), True, slices, _program_image(program))
    assert fallback.stdin is not None and fallback.stdout is not None
    fallback.stdin.write(json.dumps({"code": code.hex(), "cpu": cpu, "slices": slices}) + "\n")
    fallback.stdin.flush()
    assert json.loads(fallback.stdout.readline()) == json.loads(json.dumps([stops, exit_code]))
