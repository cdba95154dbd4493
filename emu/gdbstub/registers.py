"""The x86-64 target description gdb reads (`target.xml`) and the register numbering it implies.

The core feature is gdb's own `org.gnu.gdb.i386.core` for 64 bits (gdb checks that all its 40
registers are there by name, x87 included), then `org.gnu.gdb.i386.sse`. Register numbers in `p`,
`P`, and the `g` packet's order are positions in REGISTERS. The x87 stack is not modelled: those
registers read as unavailable (`x`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    type: str
    feature: str
    group: str = ""

    @property
    def size(self) -> int:
        return self.bits // 8


_CORE, _SSE = "org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse"
_GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)))
_POINTERS = {"rbp": "data_ptr", "rsp": "data_ptr"}
_X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")

REGISTERS: tuple[Register, ...] = (
    *(Register(name, 64, _POINTERS.get(name, "int64"), _CORE) for name in _GENERAL),
    Register("rip", 64, "code_ptr", _CORE),
    Register("eflags", 32, "i386_eflags", _CORE),
    *(Register(name, 32, "int32", _CORE) for name in ("cs", "ss", "ds", "es", "fs", "gs")),
    *(Register(f"st{i}", 80, "i387_ext", _CORE) for i in range(8)),
    *(Register(name, 32, "int", _CORE, "float") for name in _X87_CONTROL),
    *(Register(f"xmm{i}", 128, "vec128", _SSE) for i in range(16)),
    Register("mxcsr", 32, "i386_mxcsr", _SSE, "vector"),
)
UNMODELLED = frozenset(f"st{i}" for i in range(8)) | frozenset(_X87_CONTROL)
"""Registers the emulator does not model: always unavailable."""
BY_NAME = {register.name: number for number, register in enumerate(REGISTERS)}

_EFLAGS = "CF:0 PF:2 AF:4 ZF:6 SF:7 TF:8 IF:9 DF:10 OF:11 NT:14 RF:16 VM:17 AC:18 VIF:19 VIP:20 ID:21"
_MXCSR = "IE:0 DE:1 ZE:2 OE:3 UE:4 PE:5 DAZ:6 IM:7 DM:8 ZM:9 OM:10 UM:11 PM:12 FZ:15"
_VEC128 = """<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/>
<vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/>
<vector id="v2i64" type="int64" count="2"/>
<union id="vec128"><field name="v4_float" type="v4f"/>
<field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/></union>"""


def _flags(ident: str, spec: str) -> str:
    fields = []
    for item in spec.split():
        name, bit = item.split(":")
        fields.append(f'<field name="{name}" start="{bit}" end="{bit}"/>')
    return f'<flags id="{ident}" size="4">{"".join(fields)}</flags>'


def _feature(name: str, types: str) -> str:
    regs = []
    for number, register in enumerate(REGISTERS):
        if register.feature != name:
            continue
        group = f' group="{register.group}"' if register.group else ""
        regs.append(
            f'<reg name="{register.name}" bitsize="{register.bits}" type="{register.type}" regnum="{number}"{group}/>'
        )
    return f'<feature name="{name}">\n{types}\n' + "\n".join(regs) + "\n</feature>"


def target_xml() -> bytes:
    """The whole target description, as `qXfer:features:read:target.xml` serves it."""
    core = _feature(_CORE, _flags("i386_eflags", _EFLAGS))
    sse = _feature(_SSE, _VEC128 + "\n" + _flags("i386_mxcsr", _MXCSR))
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n<target version="1.0">\n'
        f"<architecture>i386:x86-64</architecture>\n{core}\n{sse}\n</target>\n"
    ).encode()


def encode_value(register: Register, value: int | None) -> bytes:
    """A register's bytes in a `g` or `p` reply: little-endian hex, or `x`s when unavailable."""
    if value is None:
        return b"xx" * register.size
    return (value & ((1 << register.bits) - 1)).to_bytes(register.size, "little").hex().encode()


def decode_value(register: Register, text: bytes) -> int:
    """The value of `register` from its little-endian hex (ValueError when malformed)."""
    raw = bytes.fromhex(text.decode("ascii"))
    if len(raw) != register.size:
        raise ValueError(f"{register.name} takes {register.size} bytes, got {len(raw)}")
    return int.from_bytes(raw, "little")
