"""Virtual time: exact counts at every stop, rdtsc and cpuid, native and fallback accounting agree."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import unicorn
from elfcraft import code_image
from unicorn import unicorn_const as uc_const
from unicorn.unicorn_py3.unicorn import uclib

from emu import accounting
from emu.accounting import UNIT_CPU
from emu.cpu import GuestCpu, TrapKind
from emu.cpuid import cpuid_leaf
from emu.elf import load_elf
from emu.trace import Trace
from procd_model.cpu_model import default_cpu_model
from procd_model.kernel import engines
from procd_model.kernel.engines import EnginePool
from procd_model.world import run_alone, run_bootstrap

ROOT = Path(__file__).resolve().parent.parent

# rdtsc; mov r8d, eax; mov ecx, 1000; L: dec ecx; jnz L; rdtsc; sub eax, r8d; mov edi, eax; mov eax, 9; syscall
RDTSC_LOOP = bytes.fromhex("0f314189c0b9e8030000ffc975fc0f314429c089c7b8090000000f05")


def cpu_for(code: bytes, model: accounting.CpuModel = UNIT_CPU) -> GuestCpu:
    cpu = GuestCpu(model)
    cpu.load(load_elf(code_image(code)))
    return cpu


def test_rdtsc_sees_exactly_the_modelled_cycles_unit_model() -> None:
    cpu = cpu_for(RDTSC_LOOP)
    assert cpu.run(10**6, clock=123_456_789).kind is TrapKind.SYSCALL
    # From the first rdtsc (inclusive) to the second (exclusive): rdtsc, mov, mov, 1000 x (dec, jnz).
    assert cpu.reg("rdi") == 3 + 2000


def test_rdtsc_sees_exactly_the_modelled_cycles_cpu_model() -> None:
    """Each rdtsc reads the virtual clock at its own instruction: here, where its block starts."""
    model = default_cpu_model()
    cpu = cpu_for(RDTSC_LOOP, model)
    clock = 7_654_321
    starts: dict[int, int] = {}
    cpu.add_block_probe(lambda address, _size, _icount, at, _insns, _cost: starts.setdefault(address, at))
    assert cpu.run(10**6, clock=clock).kind is TrapKind.SYSCALL
    second = 0x40000E  # the rdtsc after the loop starts the block after its jnz
    assert starts[0x400000] == clock
    assert cpu.reg("rdi") == starts[second] // 1000 - clock // 1000
    # 1000 iterations of dec; jnz: one taken branch a cycle, plus the predictor's first guesses.
    assert 1000 <= cpu.reg("rdi") <= 1100


def test_rdtscp_sets_the_processor_id() -> None:
    # rdtscp; mov edi, ecx; mov eax, 9; syscall
    cpu = cpu_for(bytes.fromhex("0f01f989cfb8090000000f05"))
    cpu.set_reg("rcx", 77)
    assert cpu.run(100, clock=5000).kind is TrapKind.SYSCALL
    assert cpu.reg("rdi") == 0
    assert cpu.reg("rax") == 9  # the syscall number is still there: rdtscp's eax was overwritten by mov


def test_cpuid_answers_the_fixed_cpu() -> None:
    # mov eax, 1; cpuid; syscall
    cpu = cpu_for(bytes.fromhex("b8010000000fa20f05"))
    assert cpu.run(100).kind is TrapKind.SYSCALL
    eax, ebx, ecx, edx = cpuid_leaf(1, 0)
    assert (cpu.reg("rax"), cpu.reg("rbx"), cpu.reg("rcx"), cpu.reg("rdx")) == (eax, ebx, ecx, edx)
    assert not ecx & (1 << 28), "no AVX"
    assert not ecx & (1 << 30), "no RDRAND"
    assert cpu.retired == 3


def test_cpuid_vendor() -> None:
    eax, ebx, ecx, edx = cpuid_leaf(0, 0)
    vendor = b"".join(v.to_bytes(4, "little") for v in (ebx, edx, ecx))
    assert vendor == b"GenuineIntel" and eax >= 1
    assert cpuid_leaf(7, 0) == (0, 0, 0, 0)


def test_cycle_budget_preempts_on_a_block_boundary() -> None:
    cpu = cpu_for(RDTSC_LOOP)
    trap = cpu.run(10**6, 501 * 1000)
    assert trap.kind is TrapKind.BUDGET
    assert cpu.cost <= 501 * 1000 and cpu.cost == cpu.retired * 1000
    assert cpu.run(10**6).kind is TrapKind.SYSCALL
    assert cpu.retired == 3 + 2000 + 5


class _CodeHookCounter:
    """An independent per-instruction count attached to every guest engine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[int, list[int]] = {}
        original = GuestCpu.load
        counter = self

        def load(cpu: GuestCpu, image: object) -> None:
            original(cpu, image)  # type: ignore[arg-type]
            box = [0]
            counter.counts[id(cpu)] = box

            def on_code(uc: unicorn.Uc, address: int, size: int, _: object) -> None:
                box[0] += 1

            cpu._uc.hook_add(uc_const.UC_HOOK_CODE, on_code)
            cpu._uc.ctl_flush_tb()

        monkeypatch.setattr(GuestCpu, "load", load)
        # Every guest needs a new engine (a warm one is not loaded again), and these hooked
        # engines must not serve later tests.
        monkeypatch.setattr(engines, "SHARED", EnginePool(capacity=0))


def test_totals_equal_a_per_instruction_count_on_the_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _CodeHookCounter(monkeypatch)
    trace = Trace()
    outcome = run_bootstrap(trace, 100_000_000)
    assert outcome.ok
    total = sum(box[0] for box in counter.counts.values())
    assert total == outcome.instructions == trace.events[-1].icount
    assert len(counter.counts) == 2  # procd and phase0-exit


class _NativeCounter:
    """A C code hook counting every instruction of every guest (fast enough for millions)."""

    def __init__(self) -> None:
        self.counts: dict[int, ctypes.c_uint64] = {}
        self.cpus: dict[int, GuestCpu] = {}

    def __call__(self, cpu: GuestCpu, image: object, pid: int) -> None:
        library = accounting.native_library()
        assert library is not None
        box = ctypes.c_uint64(0)
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            cpu._uc._uch,
            ctypes.byref(handle),
            uc_const.UC_HOOK_CODE,
            ctypes.cast(library.emu_count_insn, ctypes.c_void_p),
            ctypes.cast(ctypes.pointer(box), ctypes.c_void_p),
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
        )
        assert status == uc_const.UC_ERR_OK
        self.counts[pid], self.cpus[pid] = box, cpu


@pytest.mark.skipif(not accounting.native_available(), reason="the native accounting extension is not built")
@pytest.mark.parametrize("image", ["bench-compute.elf", "phase0-exit.elf", "procd.elf"])
def test_every_fixture_alone_matches_a_native_per_instruction_count(image: str) -> None:
    """Each image run alone (bench-compute: 16.5 M instructions, preempted at every quantum)."""
    counter = _NativeCounter()
    outcome = run_alone(Trace(), load_elf(ROOT / "fixtures" / "elf" / image), 10**9, instrument=counter)
    assert outcome.instructions > 0
    for pid, box in counter.counts.items():
        assert box.value == counter.cpus[pid].retired
    assert sum(box.value for box in counter.counts.values()) == outcome.instructions


def _run_env(tmp_path: Path, name: str, args: list[str], env_extra: dict[str, str]) -> bytes:
    out = tmp_path / f"{name}.jsonl"
    env = {**os.environ, **env_extra}
    subprocess.run(
        [sys.executable, "-m", "emu", "run", *args, "--format", "jsonl", "--out", str(out), "--no-dumps"],
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    return out.read_bytes()


@pytest.mark.skipif(not accounting.native_available(), reason="the native accounting extension is not built")
@pytest.mark.parametrize("scenario", ["default", "limit", "fault"])
def test_native_and_fallback_traces_are_byte_identical(tmp_path: Path, scenario: str) -> None:
    args: list[str] = []
    if scenario == "limit":
        args = ["--max-instructions", "6001"]
    elif scenario == "fault":
        image = tmp_path / "fault.elf"
        image.write_bytes(code_image(bytes.fromhex("0f31" + "90" * 40 + "89042500100000")))
        args = [str(image)]
    native = _run_env(tmp_path, "native", args, {})
    fallback = _run_env(tmp_path, "fallback", args, {accounting.FORCE_PYTHON_ENV: "python"})
    assert native == fallback
    assert b'"kind":"summary"' in native


def test_ci_builds_the_native_accounting() -> None:
    if os.environ.get("CI"):
        assert accounting.native_available(), "CI must exercise the native block accounting"
