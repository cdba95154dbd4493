"""The gdb stub without a socket: packet framing (any bytes in, never an exception) and the
command table over a fake target."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.cli import main
from emu.gdbstub.commands import COMMANDS, Action, ActionKind, Session
from emu.gdbstub.packets import MAX_PACKET, EventKind, PacketReader, checksum, frame, unescape
from emu.gdbstub.registers import BY_NAME, REGISTERS, target_xml
from emu.gdbstub.server import parse_address
from emu.gdbstub.target import Stop, StopKind, TargetError, ThreadInfo


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 64), max_size=20))
def test_any_bytes_in_any_pieces_never_raise(data: bytes, cuts: list[int]) -> None:
    reader = PacketReader()
    at = 0
    for cut in cuts:
        reader.feed(data[at : at + cut])
        at += cut
    reader.feed(data[at:])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(1, 17))
def test_framed_payloads_come_back_whole_with_interrupts_between(payloads: list[bytes], piece: int) -> None:
    stream = b"+".join(frame(payload) + b"\x03" for payload in payloads)
    reader = PacketReader()
    events = [event for at in range(0, len(stream), piece) for event in reader.feed(stream[at : at + piece])]
    assert [e.payload for e in events if e.kind is EventKind.PACKET] == payloads
    assert sum(e.kind is EventKind.INTERRUPT for e in events) == len(payloads)


def test_bad_checksums_and_oversized_packets_are_reported_not_kept() -> None:
    reader = PacketReader()
    assert [e.kind for e in reader.feed(b"$g#00$g#x1")] == [EventKind.BAD, EventKind.BAD]
    events = reader.feed(b"$" + b"a" * (MAX_PACKET * 3) + b"#00")
    assert [e.payload for e in events] == [b"packet too large"]
    assert reader.feed(frame(b"?"))[0].payload == b"?"  # the reader goes on


def test_escaping_covers_the_special_bytes() -> None:
    packet = frame(b"a#b$c}d*e")
    assert b"#" not in packet[1:-3] and b"*" not in packet[1:-3]
    assert unescape(packet[1:-3]) == b"a#b$c}d*e"
    assert int(packet[-2:], 16) == checksum(packet[1:-3])


class FakeTarget:
    def __init__(self) -> None:
        self.regs = {2: {"rip": 0x401000, "rsp": 0x7000, "eflags": 0x202}, 5: {"rip": 0x1000000}}
        self.memory = {0x401000: b"\x90\xc3"}
        self.breakpoints: set[int] = set()
        self.stepped: list[int] = []

    def threads(self) -> list[ThreadInfo]:
        return [ThreadInfo(2, "procd", "running"), ThreadInfo(5, "a<b>&c", "blocked in RECV on endpoint 1")]

    def read_register(self, tid: int, name: str) -> int | None:
        return self.regs[tid].get(name, 0)

    def write_register(self, tid: int, name: str, value: int) -> None:
        self.regs[tid][name] = value

    def read_memory(self, tid: int, address: int, size: int) -> bytes:
        data = self.memory.get(address)
        if data is None or size > len(data):
            raise TargetError("unmapped")
        return data[:size]

    def write_memory(self, tid: int, address: int, data: bytes) -> None:
        self.memory[address] = data

    def set_breakpoint(self, address: int) -> None:
        self.breakpoints.add(address)

    def clear_breakpoint(self, address: int) -> None:
        self.breakpoints.discard(address)

    def step(self, tid: int) -> None:
        self.stepped.append(tid)

    def resume_from(self, tid: int) -> None:
        pass

    def detach(self) -> None:
        self.breakpoints.clear()

    def clock(self) -> str:
        return "virtual time: 5 cycles"

    def process_table(self) -> list[str]:
        return [" pid  name", "   2  procd"]


def session() -> tuple[Session, FakeTarget]:
    target = FakeTarget()
    s = Session(target)
    s.stopped(Stop(StopKind.BREAKPOINT, 2))
    return s, target


def test_registers_follow_the_target_description() -> None:
    s, target = session()
    tree = ET.fromstring(target_xml())
    names = [reg.get("name") for reg in tree.iter("reg")]
    assert names == [register.name for register in REGISTERS]
    assert {f.get("name") for f in tree.iter("feature")} == {"org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse"}
    g = s.handle(b"g")
    assert isinstance(g, bytes) and len(g) == 2 * sum(register.size for register in REGISTERS)
    assert s.handle(f"p{BY_NAME['rip']:x}".encode()) == (0x401000).to_bytes(8, "little").hex().encode()
    assert s.handle(f"p{BY_NAME['st0']:x}".encode()) == b"xx" * 10  # not modelled
    assert s.handle(f"P{BY_NAME['rax']:x}=".encode() + (7).to_bytes(8, "little").hex().encode()) == b"OK"
    assert target.regs[2]["rax"] == 7
    assert s.handle(b"Hg5") == b"OK" and s.handle(f"p{BY_NAME['rip']:x}".encode()).startswith(b"0000000100")


def test_memory_breakpoints_threads_and_monitor() -> None:
    s, target = session()
    assert s.handle(b"m401000,2") == b"90c3"
    assert s.handle(b"m401000,3") == b"E0E"
    assert s.handle(b"M500,2:abcd") == b"OK" and target.memory[0x500] == b"\xab\xcd"
    assert s.handle(b"X600,1:#") == b"OK"  # as the reader hands it on, unescaped
    assert target.memory[0x600] == b"#"
    assert s.handle(b"Z0,401000,1") == b"OK" and target.breakpoints == {0x401000}
    assert s.handle(b"Z1,401000,1") == b""  # hardware breakpoints are not offered
    assert s.handle(b"qfThreadInfo") == b"m2,5" and s.handle(b"qsThreadInfo") == b"l"
    threads = ET.fromstring(s.handle(b"qXfer:threads:read::0,fff")[1:])  # type: ignore[index]
    assert [(t.get("id"), t.get("name")) for t in threads] == [("2", "procd"), ("5", "a<b>&c")]
    assert bytes.fromhex(s.handle(b"qThreadExtraInfo,5").decode()).decode() == "a<b>&c: blocked in RECV on endpoint 1"  # type: ignore[union-attr]
    assert s.handle(b"T5") == b"OK" and s.handle(b"T9") == b"E0E"
    out = bytes.fromhex(s.handle(b"qRcmd,").decode()).decode()  # type: ignore[union-attr]
    assert "virtual time" in out and "procd" in out
    assert "unknown monitor command" in bytes.fromhex(s.handle(b"qRcmd," + b"x".hex().encode()).decode()).decode()  # type: ignore[union-attr]
    assert s.handle(b"?") == b"T05thread:2;swbreak:;"


def test_resume_packets_become_actions() -> None:
    s, _ = session()
    assert s.handle(b"vCont;c") == Action(ActionKind.CONTINUE)
    assert s.handle(b"vCont;s:5;c") == Action(ActionKind.CONTINUE, step=5)
    assert s.handle(b"s") == Action(ActionKind.CONTINUE, step=2)
    assert s.handle(b"c") == Action(ActionKind.CONTINUE)
    assert s.handle(b"D;1") == Action(ActionKind.DETACH, reply=b"OK")
    assert s.handle(b"k") == Action(ActionKind.KILL)
    assert s.handle(b"vCont;t:2") == b""


@pytest.mark.parametrize("address", ["notaport", "70000", "127.0.0.1:", ":-1", "host:12x"])
def test_a_bad_gdb_address_is_one_line(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--gdb", address, "--trace", "none"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("emu: error: --gdb") and "PORT" in err[0], err


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["run", "--gdb", str(port), "--trace", "none"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"--gdb 127.0.0.1:{port}: cannot listen" in err[0], err


def test_parse_address_defaults_to_loopback() -> None:
    assert parse_address("0") == ("127.0.0.1", 0)
    assert parse_address("1234") == ("127.0.0.1", 1234)
    assert parse_address("0.0.0.0:99") == ("0.0.0.0", 99)
    assert parse_address("[::1]:5") == ("::1", 5)


PREFIXES = [prefix for prefix, _ in COMMANDS]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PREFIXES), st.binary(max_size=60) | st.text("0123456789abcdefx,:;=-p.", max_size=40))
def test_any_packet_gets_an_answer_never_an_exception(prefix: bytes, tail: bytes | str) -> None:
    s, _ = session()
    answer = s.handle(prefix + (tail.encode() if isinstance(tail, str) else tail))
    assert isinstance(answer, (bytes, Action))


def test_addresses_beyond_64_bits_are_refused() -> None:
    s, target = session()
    assert s.handle(b"Z0,10000000000000000,1") == b"E01" and not target.breakpoints
    assert s.handle(b"m10000000000000000,1") == b"E01"
