"""The hot engine calls (emu/engine_calls.py): the native entry and its ctypes fallback agree."""

from __future__ import annotations

import ctypes
import os

import pytest
import unicorn
from unicorn import unicorn_const as uc_const
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib

from emu import engine_calls
from emu.accounting import AccountState, add_native_entry_hooks
from emu.engine_calls import EngineCalls, RegisterIds

CODE = 0x1000
# mov rax, 7; mov rdi, 0x1122334455667788; syscall; mov rax, 1; ud2
PROGRAM = bytes.fromhex("48c7c007000000" + "48bf8877665544332211" + "0f05" + "48c7c001000000" + "0f0b")
ENTRY = RegisterIds([x86_const.UC_X86_REG_RAX, x86_const.UC_X86_REG_RDI, x86_const.UC_X86_REG_RIP], has_rip=True)


@pytest.fixture(params=["native", "ctypes"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "ctypes":
        monkeypatch.setattr(engine_calls, "_NATIVE", None)
    elif not engine_calls.native_available():
        pytest.skip("emu._engine is not built")
    return str(request.param)


def _engine() -> tuple[unicorn.Uc, AccountState, EngineCalls]:
    uc = unicorn.Uc(uc_const.UC_ARCH_X86, uc_const.UC_MODE_64)
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(CODE, PROGRAM)
    state = AccountState()
    state.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
    if not add_native_entry_hooks(uc, state):
        pytest.skip("the native syscall stop is not built")
    return uc, state, EngineCalls(uc, ctypes.addressof(state) + AccountState.syscalled.offset)


def test_start_reads_the_syscall_registers_at_the_stop(mode: str) -> None:
    _, state, calls = _engine()
    at_syscall = calls.start(CODE, ENTRY)
    assert state.syscalled == 1
    assert at_syscall == (7, 0x1122334455667788, CODE + 7 + 10 + 2)


def test_a_guest_fault_is_a_unicorn_error_and_no_syscall(mode: str) -> None:
    _, state, calls = _engine()
    with pytest.raises(unicorn.UcError):
        calls.start(CODE + 7 + 10 + 2, ENTRY)  # runs into ud2
    assert state.syscalled == 0


def test_read_and_write_round_trip_keeping_low_64_bits(mode: str) -> None:
    _, _, calls = _engine()
    calls.write(ENTRY, (-1, 1 << 64 | 5, CODE))
    assert calls.read(ENTRY) == (0xFFFF_FFFF_FFFF_FFFF, 5, CODE)


def test_a_run_from_unmapped_memory_is_a_unicorn_error(mode: str) -> None:
    _, _, calls = _engine()
    with pytest.raises(unicorn.UcError):
        calls.start(0x40_0000, ENTRY)


def test_ci_builds_the_native_engine_calls() -> None:
    if os.environ.get("CI"):
        assert engine_calls.native_available(), "CI must exercise emu/_engine.c"


def test_start_writes_the_staged_registers_before_running(mode: str) -> None:
    _, _, calls = _engine()
    staged = (RegisterIds([x86_const.UC_X86_REG_RAX]), (5,))
    # the program sets rax itself: start at its second instruction, which leaves rax alone
    at_syscall = calls.start(CODE + 7, ENTRY, staged)
    assert at_syscall == (5, 0x1122334455667788, CODE + 7 + 10 + 2)


@pytest.mark.parametrize("dirty", [(), (0,), (2,), (0, 1, 3)])
def test_put_pages_rewrites_exactly_the_pages_that_differ(mode: str, dirty: tuple[int, ...]) -> None:
    page = 4096
    saved = bytes(range(256)) * (4 * page // 256)
    buffer = ctypes.create_string_buffer(saved, len(saved))
    for index in dirty:
        buffer[index * page + 7] = b"\xff"
    assert engine_calls.put_pages(ctypes.addressof(buffer), saved, page) == len(dirty)
    assert buffer.raw == saved
