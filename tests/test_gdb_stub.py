"""The gdb stub over a real socket, with raw packets: breakpoints, steps across syscalls and
processes, faults, Ctrl-C, and hostile clients. Debugging never changes the trace digest, and no
client (garbage, bad checksums, oversized packets, an abrupt close) takes the emulator down.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import capstone
import pytest
from elfcraft import code_image
from gdb_harness import ROOT, Emulator, RspClient, plain_digest

from emu.cli import main
from emu.elf import load_elf
from emu.gdbstub.packets import MAX_PACKET, frame
from emu.gdbstub.registers import BY_NAME

PROCD = load_elf(ROOT / "fixtures" / "elf" / "procd.elf")
LAUNCH = next(s for s in PROCD.symbols if s.name.endswith("::launch"))
FAULT_KILL_ENTRY = load_elf(ROOT / "fixtures" / "elf" / "phase0-fault-kill.elf").entry
RIP = BY_NAME["rip"]


def instruction(address: int, index: int) -> int:
    """The address of the `index`th instruction from `address` in procd."""
    segment = next(s for s in PROCD.segments if s.vaddr <= address < s.end)
    code = segment.data[address - segment.vaddr :]
    decoded = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64).disasm_lite(code, address, index + 1)
    return [insn[0] for insn in decoded][index]


def rip_of(client: RspClient) -> int:
    return int.from_bytes(bytes.fromhex(client.ask(f"p{RIP:x}".encode()).decode()), "little")


@pytest.mark.parametrize("accounting", ["native", "python"])
def test_breaks_steps_and_faults_leave_the_digest_unchanged(tmp_path: Path, accounting: str) -> None:
    """In both block accountings (emu/accounting.py): a stop inside a block gives back its tail."""
    args = ("--scenario", "phase0-fault-kill", "--trace", "none")
    with Emulator(tmp_path / "t.jsonl", *args, env={"EMU_ACCOUNTING": accounting}) as emu:
        client = RspClient(emu.port)
        entry = client.ask(b"?")
        assert entry.startswith(b"T05thread:")  # procd, the first guest, at its first instruction
        procd = int(entry.split(b"thread:")[1].split(b";")[0], 16)
        assert client.ask(b"qC") == f"QC{procd:x}".encode()
        assert client.ask(f"Z0,{LAUNCH.address:x},1".encode()) == b"OK"
        assert client.ask(f"Z0,{FAULT_KILL_ENTRY:x},1".encode()) == b"OK"  # an image not yet loaded
        assert client.ask(b"vCont;c") == f"T05thread:{procd:x};swbreak:;".encode()
        assert rip_of(client) == LAUNCH.address
        regs = client.ask(b"g")
        assert int.from_bytes(bytes.fromhex(regs[16 * 16 : 17 * 16].decode()), "little") == LAUNCH.address
        seen = set()
        for _ in range(400):  # through CREATE_PROCESS's syscalls and procd's other blocks
            stop = client.ask(f"vCont;s:{procd:x};c".encode())
            assert stop.startswith(b"T05thread:"), stop
            if client.ask(b"qC") != f"QC{procd:x}".encode():
                assert stop.endswith(b"swbreak:;")  # phase0-fault-kill reached its entry
                break
            seen.add(rip_of(client))  # a `rep movs` stops once per iteration, as hardware steps it
        assert len(seen) > 100
        assert client.ask(f"z0,{LAUNCH.address:x},1".encode()) == b"OK"
        stop = stop if client.ask(b"qC") != f"QC{procd:x}".encode() else client.ask(b"vCont;c")
        while rip_of(client) != FAULT_KILL_ENTRY:  # a step of procd's may still be due first
            stop = client.ask(b"vCont;c")
        child = int(stop.split(b"thread:")[1].split(b";")[0], 16)
        assert stop == f"T05thread:{child:x};swbreak:;".encode() and child != procd
        child_rips = [rip_of(client)]
        for _ in range(20):  # steps in the child's own address space
            assert client.ask(f"vCont;s:{child:x};c".encode()) == f"T05thread:{child:x};".encode()
            child_rips.append(rip_of(client))
        assert len(set(child_rips)) > 10
        stop = client.ask(b"vCont;c")
        while not stop.startswith(b"T0b"):  # the fault: SIGSEGV, in phase0-fault-kill's thread
            assert stop.startswith(b"T05"), stop
            stop = client.ask(b"vCont;c")
        faulting = int(stop.split(b"thread:")[1].split(b";")[0], 16)
        assert client.ask(b"qfThreadInfo").startswith(b"m") and f"{faulting:x}".encode() in client.ask(b"qfThreadInfo")
        assert client.ask(b"vCont;c") == b"W00"
        client.close()
        code, err = emu.finish()
        assert code == 0, err
        assert emu.events()[-1]["digest"] == plain_digest(tmp_path, *args)


def test_ctrl_c_stops_a_spinning_guest(tmp_path: Path) -> None:
    spin = tmp_path / "spin.elf"
    spin.write_bytes(code_image(b"\x90\xeb\xfd"))  # nop; jmp back to the nop
    with Emulator(tmp_path / "t.jsonl", str(spin), "--max-instructions", "4000000000") as emu:
        client = RspClient(emu.port)
        assert client.ask(b"?").startswith(b"T05thread:1;")
        client.send(b"vCont;c")
        client.sock.sendall(b"\x03")
        assert client.reply() == b"T02thread:1;"
        assert rip_of(client) in (0x400000, 0x400001)
        assert "virtual time:" in bytes.fromhex(client.ask(b"qRcmd," + b"time".hex().encode()).decode()).decode()
        client.send(b"k")
        client.close()
        code, err = emu.finish()
        assert code == 1 and "killed" in err, err


def test_a_hostile_client_never_takes_the_emulator_down(tmp_path: Path) -> None:
    with Emulator(tmp_path / "t.jsonl") as emu:
        client = RspClient(emu.port)
        client.sock.sendall(b"garbage \x00\xff+-}#$$#zz")  # noise, then a packet whose checksum is not hex
        client.sock.sendall(b"$g#00")  # a wrong checksum
        assert client.sock.recv(16).count(b"-") >= 1
        client.sock.sendall(frame(b"m" + b"0" * (MAX_PACKET * 4)))  # oversized
        for bad in (b"mzz,4", b"p999", b"Hgzz", b"Z0", b"M400000,4:zz", b"X1,2:", b"qXfer:features:read:target.xml:zz"):
            assert client.ask(bad).startswith(b"E"), bad
        assert client.ask(b"m0,10") == b"E0E"  # unmapped
        assert client.ask(f"P{BY_NAME['cs']:x}=00000000".encode()) == b"E0E"  # segments are read-only
        assert client.ask(b"Hg63") == b"E0E"  # no such thread
        assert client.ask(b"T63") == b"E0E"
        assert client.ask(b"qNoSuchThing") == b""
        assert client.ask(b"vCont?") == b"vCont;c;C;s;S"
        assert client.ask(b"?").startswith(b"T05thread:2;")
        client.sock.shutdown(socket.SHUT_RDWR)  # abrupt close while stopped
        client.close()
        code, err = emu.finish()
        assert code == 0, err
        assert "goes on without the debugger" in err
        assert emu.events()[-1]["digest"] == plain_digest(tmp_path)


def test_a_client_that_leaves_while_the_guest_runs(tmp_path: Path) -> None:
    with Emulator(tmp_path / "t.jsonl", "--scenario", "restart-storm") as emu:
        client = RspClient(emu.port)
        client.ask(b"Z0,1,1")  # never reached: the run goes on until the client leaves
        client.send(b"vCont;c")
        client.close()
        code, err = emu.finish()
        assert code == 0, err
        assert emu.events()[-1]["digest"] == plain_digest(tmp_path, "--scenario", "restart-storm")


def test_detach_lets_the_run_finish(tmp_path: Path) -> None:
    with Emulator(tmp_path / "t.jsonl") as emu:
        client = RspClient(emu.port)
        client.ask(f"Z0,{LAUNCH.address:x},1".encode())
        assert client.ask(b"D") == b"OK"
        client.close()
        code, _err = emu.finish()
        assert code == 0
        assert emu.events()[-1]["digest"] == plain_digest(tmp_path)


@pytest.mark.parametrize(("level", "form"), [("insn", "text"), ("insn", "jsonl"), ("block", "jsonl")])
def test_block_and_instruction_traces_are_unchanged_by_stops(tmp_path: Path, level: str, form: str) -> None:
    """A stop inside a block shows neither that block again nor the instruction it stopped before."""
    stop_at = instruction(LAUNCH.address, 10)  # inside launch's first block, after its prologue
    with Emulator(tmp_path / "t.out", "--trace", level, "--format", form) as emu:
        client = RspClient(emu.port)
        client.ask(b"?")
        client.ask(f"Z0,{stop_at:x},1".encode())
        stop = client.ask(b"vCont;c")
        tid = stop.split(b"thread:")[1].split(b";")[0]
        for _ in range(30):
            client.ask(b"vCont;s:" + tid + b";c")
        client.ask(b"D")
        client.close()
        assert emu.finish()[0] == 0
    plain = tmp_path / "plain.out"
    main(["run", "--trace", level, "--format", form, "--out", str(plain)])
    assert (tmp_path / "t.out").read_bytes() == plain.read_bytes()


def test_a_flood_of_packets_ends_the_session_not_the_run(tmp_path: Path) -> None:
    with Emulator(tmp_path / "t.jsonl") as emu:
        client = RspClient(emu.port)
        client.sock.sendall(frame(b"?") * 5000)
        with contextlib.suppress(ConnectionError):  # a reset, when it hangs up on unread packets
            while client.sock.recv(1 << 16):  # the stub answers some, then hangs up
                pass
        client.close()
        code, err = emu.finish()
        assert code == 0, err
        assert "packets without waiting" in err
