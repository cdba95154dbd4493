"""Derive the per-instruction cost table of emu/costmodel.py from LLVM's scheduling model, via llvm-mca.

    python3 tools/derive_costs.py [--cpu skylake] [--out FILE] [--elf-dir DIR] [--llvm-mca PATH] [--check]

Sweeps the executable segments of every ELF in ``fixtures/elf/`` (plus a built-in list of common
compiler-generated forms), groups the instructions by `emu.costmodel.form_key`, writes one
representative per form into an llvm-mca input (Intel syntax; RIP-relative operands and branch
targets rewritten into something assemblable), runs ``llvm-mca -mcpu=<cpu> --json`` and turns each
form's uOps and reciprocal throughput into a cost in millicycles:

    cost = max(FLOOR, round(1000 * max(uOps / dispatch_width, RThroughput / 2)))

(see docs/cost-model.md for why, and for how it compares with llvm-mca on procd's hot path). A
few forms get a documented fixed cost instead (``syscall``; ``rep``-prefixed string instructions,
which Unicorn retires once per element). The table goes to ``emu/data/costs-<cpu>.json`` with
sorted keys and a header recording the llvm-mca version and the formula: the same inputs and the
same LLVM give a byte-identical file. ``--check`` compares instead of writing (exit 1 on drift).

Errors (llvm-mca missing or failing, an unreadable ELF) are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import capstone  # noqa: E402

from emu.costmodel import CATEGORIES, category, form_key  # noqa: E402
from emu.elf import ElfError, Perm, load_elf  # noqa: E402
from emu.events import MILLICYCLES_PER_CYCLE  # noqa: E402

DEFAULT_ELF_DIR = ROOT / "fixtures" / "elf"
DATA_DIR = ROOT / "emu" / "data"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CpuSpec:
    """A CPU the tool can derive a table for: LLVM's -mcpu name, the nominal clock, and the machine
    parameters the block model uses (docs/cost-model.md, *The machine*)."""

    mcpu: str
    frequency_hz: int
    description: str
    machine: dict[str, int]
    measured: str | None = None
    """Path (from the repository's root) of figures measured on the real CPU that override LLVM's."""


CPUS = {
    "skylake": CpuSpec(
        mcpu="skylake",
        frequency_hz=2_000_000_000,
        description=(
            "Intel Skylake client core (LLVM scheduling model SkylakeClient, -mcpu=skylake); nominal clock "
            "2.0 GHz, the base frequency of the Xeon E3-1505L v5 (Skylake-H, 4 cores, 25 W); turbo ignored"
        ),
        # Rename width 4 fused uops; LLVM's reorder buffer (224) over that width; LLVM's load latency
        # (5); store forwarding and the mispredict refill as Intel's optimization manual gives them.
        machine={
            "width": 4,
            "window_millicycles": 56_000,
            "load_latency": 5,
            "store_forward_latency": 5,
            "mispredict_penalty": 16,
            "taken_branch_millicycles": 1000,
            "jump_millicycles": 1000,
        },
    ),
    "zen4": CpuSpec(
        mcpu="znver3",
        frequency_hz=3_700_000_000,
        description=(
            "AMD Zen 4 core (EPYC family 0x19 model 0x11), calibrated on the machine: LLVM's Zen 3 model "
            "(-mcpu=znver3; LLVM 14 has no znver4) for micro-ops and ports, with latencies and machine "
            "parameters measured on the host (benches/data/measured-zen4.json, python -m benches.measure); "
            "nominal clock 3.7 GHz, the core clock measured there"
        ),
        # Rename width 6 macro-ops; the 320-entry reorder buffer over that width; the rest measured.
        machine={"width": 6, "window_millicycles": 53_000, "taken_branch_millicycles": 1000},
        measured="benches/data/measured-zen4.json",
    ),
}

MEASURED_LATENCIES = {
    # form: (calibration kernel, instances of the form in its dependency chain per iteration)
    "imul r64, r64": ("cal_imul", 8),
    "div r32": ("cal_div32", 4),
    "div r64": ("cal_div64", 4),
    "mulps xmm, xmm": ("cal_mulps", 8),
    "addps xmm, xmm": ("cal_addps", 8),
    "mov r64, m64": ("cal_load", 8),
}
"""Forms whose latency comes from the host's measurements instead of LLVM's model."""

MEASURED_THROUGHPUTS = {
    # form: (calibration kernel, independent instances of the form per iteration)
    "mov m64, r64": ("cal_stores", 8),
}
"""Forms whose reciprocal throughput (to a quarter cycle) comes from the host's measurements."""


def measured_parameters(spec: CpuSpec) -> tuple[dict[str, int], dict[str, int], dict[str, float]]:
    """(machine parameters, latency per form) measured on the real CPU, from the committed figures."""
    if spec.measured is None:
        return dict(spec.machine), {}, {}
    path = ROOT / spec.measured
    try:
        cal = {name: float(v["cycles"]) for name, v in json.loads(path.read_text("utf-8"))["calibration"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeriveError(f"{path}: cannot read the measured figures: {exc}") from None
    machine = dict(spec.machine)
    machine["load_latency"] = round(cal["cal_load"] / 8)
    # store, reload and one add per step: what the add does not explain is the forwarding
    machine["store_forward_latency"] = max(0, round(cal["cal_forward"] / 4 - 1))
    # half the branches are mispredicted; a miss costs the refill plus test and branch (2 cycles)
    machine["mispredict_penalty"] = round(2 * (cal["cal_random"] - cal["cal_xorshift"]) - 2)
    # a call, a return and the loop's taken branch (one cycle, cal_taken) per iteration
    machine["jump_millicycles"] = round(max(1.0, (cal["cal_callret"] - 1) / 2) * 1000)
    latencies = {form: round(cal[kernel] / count) for form, (kernel, count) in MEASURED_LATENCIES.items()}
    throughputs = {form: round(4 * cal[kernel] / count) / 4 for form, (kernel, count) in MEASURED_THROUGHPUTS.items()}
    return machine, latencies, throughputs


FORMULA = "cost = max(1, round(1000 * fused_uops / width)): the form's share of the rename width"
PORT_ITERATIONS = 100
"""Iterations of each one-form region whose average port pressure is a form's `ports`."""

FIXED_COSTS = {
    "syscall": (
        1000,
        "llvm-mca cannot time a privilege transition; the instruction's own issue is charged one cycle "
        "and the kernel entry/exit is charged by the kernel model",
    ),
    "string": (
        1000,
        "rep-prefixed string instruction: Unicorn retires it once per element (plus once when the count "
        "reaches zero), so it is charged one cycle per element; llvm-mca models it as a 100-cycle placeholder",
    ),
}
"""Categories whose forms get a documented fixed cost instead of llvm-mca's figures."""

DEFAULT_COSTS = {
    "syscall": 1000,
    "call": 1000,
    "ret": 500,
    "branch": 500,
    "string": 1000,
    "simd": 500,
    "memory": 500,
    "other": 250,
}
"""Millicycles for forms missing from the table, by `emu.costmodel.category` (docs/cost-model.md)."""
assert set(DEFAULT_COSTS) == set(CATEGORIES)

BUILTIN_FORMS = (
    "4889d8",  # mov rax, rbx
    "89d8",  # mov eax, ebx
    "6689d8",  # mov ax, bx
    "88d8",  # mov al, bl
    "48c7c078563412",  # mov rax, 305419896
    "b878563412",  # mov eax, 305419896
    "66b83412",  # mov ax, 4660
    "b012",  # mov al, 18
    "48b8bc9a785634120000",  # movabs rax, 20015998343868
    "488b4308",  # mov rax, qword ptr [rbx + 8]
    "8b4308",  # mov eax, dword ptr [rbx + 8]
    "668b4308",  # mov ax, word ptr [rbx + 8]
    "8a4308",  # mov al, byte ptr [rbx + 8]
    "48894308",  # mov qword ptr [rbx + 8], rax
    "894308",  # mov dword ptr [rbx + 8], eax
    "66894308",  # mov word ptr [rbx + 8], ax
    "884308",  # mov byte ptr [rbx + 8], al
    "48c7430812000000",  # mov qword ptr [rbx + 8], 18
    "c7430812000000",  # mov dword ptr [rbx + 8], 18
    "66c743081200",  # mov word ptr [rbx + 8], 18
    "c6430812",  # mov byte ptr [rbx + 8], 18
    "0fb6c3",  # movzx eax, bl
    "0fb7c3",  # movzx eax, bx
    "0fb603",  # movzx eax, byte ptr [rbx]
    "0fb703",  # movzx eax, word ptr [rbx]
    "480fb6c3",  # movzx rax, bl
    "0fbec3",  # movsx eax, bl
    "480fbfc3",  # movsx rax, bx
    "4863c3",  # movsxd rax, ebx
    "486303",  # movsxd rax, dword ptr [rbx]
    "0fbe03",  # movsx eax, byte ptr [rbx]
    "488d4308",  # lea rax, [rbx + 8]
    "8d444b08",  # lea eax, [rbx + 2*rcx + 8]
    "488d0500010000",  # lea rax, [rip + 256]
    "4893",  # xchg rax, rbx
    "4801d8",  # add rax, rbx
    "01d8",  # add eax, ebx
    "4883c008",  # add rax, 8
    "83c008",  # add eax, 8
    "480303",  # add rax, qword ptr [rbx]
    "480103",  # add qword ptr [rbx], rax
    "48830308",  # add qword ptr [rbx], 8
    "830308",  # add dword ptr [rbx], 8
    "4829d8",  # sub rax, rbx
    "29d8",  # sub eax, ebx
    "4883e808",  # sub rax, 8
    "83e808",  # sub eax, 8
    "482b03",  # sub rax, qword ptr [rbx]
    "4821d8",  # and rax, rbx
    "21d8",  # and eax, ebx
    "4883e008",  # and rax, 8
    "83e008",  # and eax, 8
    "2401",  # and al, 1
    "4809d8",  # or rax, rbx
    "09d8",  # or eax, ebx
    "4883c808",  # or rax, 8
    "83c808",  # or eax, 8
    "08d8",  # or al, bl
    "4831d8",  # xor rax, rbx
    "31d8",  # xor eax, ebx
    "31c0",  # xor eax, eax
    "4831c0",  # xor rax, rax
    "4883f008",  # xor rax, 8
    "83f008",  # xor eax, 8
    "4811d8",  # adc rax, rbx
    "4819d8",  # sbb rax, rbx
    "19c0",  # sbb eax, eax
    "4839d8",  # cmp rax, rbx
    "39d8",  # cmp eax, ebx
    "6639d8",  # cmp ax, bx
    "38d8",  # cmp al, bl
    "4883f808",  # cmp rax, 8
    "83f808",  # cmp eax, 8
    "6683f808",  # cmp ax, 8
    "3c08",  # cmp al, 8
    "483b03",  # cmp rax, qword ptr [rbx]
    "3b03",  # cmp eax, dword ptr [rbx]
    "483903",  # cmp qword ptr [rbx], rax
    "3903",  # cmp dword ptr [rbx], eax
    "48833b08",  # cmp qword ptr [rbx], 8
    "833b08",  # cmp dword ptr [rbx], 8
    "66833b08",  # cmp word ptr [rbx], 8
    "803b08",  # cmp byte ptr [rbx], 8
    "4885c0",  # test rax, rax
    "85c0",  # test eax, eax
    "84c0",  # test al, al
    "4885d8",  # test rax, rbx
    "85d8",  # test eax, ebx
    "a801",  # test al, 1
    "a901000000",  # test eax, 1
    "f60301",  # test byte ptr [rbx], 1
    "48ffc0",  # inc rax
    "ffc0",  # inc eax
    "48ffc8",  # dec rax
    "ffc8",  # dec eax
    "48ff03",  # inc qword ptr [rbx]
    "48f7d8",  # neg rax
    "f7d8",  # neg eax
    "48f7d0",  # not rax
    "f7d0",  # not eax
    "48c1e004",  # shl rax, 4
    "c1e004",  # shl eax, 4
    "48c1e804",  # shr rax, 4
    "c1e804",  # shr eax, 4
    "48c1f804",  # sar rax, 4
    "c1f804",  # sar eax, 4
    "48d3e0",  # shl rax, cl
    "48d3e8",  # shr rax, cl
    "48d3f8",  # sar rax, cl
    "48c1c004",  # rol rax, 4
    "48c1c804",  # ror rax, 4
    "480fa4d804",  # shld rax, rbx, 4
    "480facd804",  # shrd rax, rbx, 4
    "480fafc3",  # imul rax, rbx
    "0fafc3",  # imul eax, ebx
    "486bc308",  # imul rax, rbx, 8
    "480faf03",  # imul rax, qword ptr [rbx]
    "48f7e3",  # mul rbx
    "48f7eb",  # imul rbx
    "48f7f3",  # div rbx
    "f7f3",  # div ebx
    "48f7fb",  # idiv rbx
    "f7fb",  # idiv ebx
    "4899",  # cqo
    "99",  # cdq
    "4898",  # cdqe
    "480fa3d8",  # bt rax, rbx
    "480fbae004",  # bt rax, 4
    "480fabd8",  # bts rax, rbx
    "480fb3d8",  # btr rax, rbx
    "480fbcc3",  # bsf rax, rbx
    "480fbdc3",  # bsr rax, rbx
    "f3480fbcc3",  # tzcnt rax, rbx
    "f3480fbdc3",  # lzcnt rax, rbx
    "f3480fb8c3",  # popcnt rax, rbx
    "480fc8",  # bswap rax
    "0fc8",  # bswap eax
    "0f94c0",  # sete al
    "0f95c0",  # setne al
    "0f92c0",  # setb al
    "0f93c0",  # setae al
    "0f97c0",  # seta al
    "0f96c0",  # setbe al
    "0f9cc0",  # setl al
    "0f9dc0",  # setge al
    "0f9fc0",  # setg al
    "0f9ec0",  # setle al
    "480f44c3",  # cmove rax, rbx
    "480f45c3",  # cmovne rax, rbx
    "480f42c3",  # cmovb rax, rbx
    "480f43c3",  # cmovae rax, rbx
    "480f47c3",  # cmova rax, rbx
    "480f46c3",  # cmovbe rax, rbx
    "480f4cc3",  # cmovl rax, rbx
    "480f4dc3",  # cmovge rax, rbx
    "480f4fc3",  # cmovg rax, rbx
    "480f4ec3",  # cmovle rax, rbx
    "0f44c3",  # cmove eax, ebx
    "0f45c3",  # cmovne eax, ebx
    "0f42c3",  # cmovb eax, ebx
    "0f43c3",  # cmovae eax, ebx
    "480f4403",  # cmove rax, qword ptr [rbx]
    "50",  # push rax
    "6a08",  # push 8
    "ff33",  # push qword ptr [rbx]
    "58",  # pop rax
    "55",  # push rbp
    "4889e5",  # mov rbp, rsp
    "c9",  # leave
    "c3",  # ret
    "c20800",  # ret 8
    "ff13",  # call qword ptr [rbx]
    "ffd0",  # call rax
    "ffe0",  # jmp rax
    "ff23",  # jmp qword ptr [rbx]
    "ff24c500004000",  # jmp qword ptr [8*rax + 4194304]
    "90",  # nop
    "0f1f00",  # nop dword ptr [rax]
    "2e660f1f0400",  # nop word ptr cs:[rax + rax]
    "0f0b",  # ud2
    "cc",  # int3
    "f390",  # pause
    "0faef0",  # mfence
    "0faee8",  # lfence
    "0faef8",  # sfence
    "f0480103",  # lock add qword ptr [rbx], rax
    "f0480fc103",  # lock xadd qword ptr [rbx], rax
    "f0480fb10b",  # lock cmpxchg qword ptr [rbx], rcx
    "488703",  # xchg qword ptr [rbx], rax
    "480fb10b",  # cmpxchg qword ptr [rbx], rcx
    "f3a4",  # rep movsb byte ptr [rdi], byte ptr [rsi]
    "f3a5",  # rep movsd dword ptr [rdi], dword ptr [rsi]
    "f348a5",  # rep movsq qword ptr [rdi], qword ptr [rsi]
    "f3aa",  # rep stosb byte ptr [rdi], al
    "f348ab",  # rep stosq qword ptr [rdi], rax
    "0f1003",  # movups xmm0, xmmword ptr [rbx]
    "0f1103",  # movups xmmword ptr [rbx], xmm0
    "0f2803",  # movaps xmm0, xmmword ptr [rbx]
    "0f2903",  # movaps xmmword ptr [rbx], xmm0
    "0f28c1",  # movaps xmm0, xmm1
    "f30f6f03",  # movdqu xmm0, xmmword ptr [rbx]
    "f30f7f03",  # movdqu xmmword ptr [rbx], xmm0
    "660f6fc1",  # movdqa xmm0, xmm1
    "0f57c0",  # xorps xmm0, xmm0
    "0f57c1",  # xorps xmm0, xmm1
    "660fefc0",  # pxor xmm0, xmm0
    "660fefc1",  # pxor xmm0, xmm1
    "66480f6ec0",  # movq xmm0, rax
    "66480f7ec0",  # movq rax, xmm0
    "660f6ec0",  # movd xmm0, eax
    "660f7ec0",  # movd eax, xmm0
    "f30f7e03",  # movq xmm0, qword ptr [rbx]
    "660fd603",  # movq qword ptr [rbx], xmm0
    "660f74c1",  # pcmpeqb xmm0, xmm1
    "660fd7c0",  # pmovmskb eax, xmm0
    "660f6cc1",  # punpcklqdq xmm0, xmm1
    "660f70c100",  # pshufd xmm0, xmm1, 0
    # SSE arithmetic and conversions of common compiler output (scalar and packed float/double).
    "0f59c1",  # mulps xmm0, xmm1
    "0f5903",  # mulps xmm0, xmmword ptr [rbx]
    "0f58c1",  # addps xmm0, xmm1
    "0f5803",  # addps xmm0, xmmword ptr [rbx]
    "0f5cc1",  # subps xmm0, xmm1
    "0f5ec1",  # divps xmm0, xmm1
    "0f51c1",  # sqrtps xmm0, xmm1
    "0f5dc1",  # minps xmm0, xmm1
    "0f5fc1",  # maxps xmm0, xmm1
    "0f54c1",  # andps xmm0, xmm1
    "0f55c1",  # andnps xmm0, xmm1
    "0f56c1",  # orps xmm0, xmm1
    "0fc6c100",  # shufps xmm0, xmm1, 0
    "0f14c1",  # unpcklps xmm0, xmm1
    "660f59c1",  # mulpd xmm0, xmm1
    "660f58c1",  # addpd xmm0, xmm1
    "f30f59c1",  # mulss xmm0, xmm1
    "f30f58c1",  # addss xmm0, xmm1
    "f30f5cc1",  # subss xmm0, xmm1
    "f30f5ec1",  # divss xmm0, xmm1
    "f20f59c1",  # mulsd xmm0, xmm1
    "f20f58c1",  # addsd xmm0, xmm1
    "f20f5cc1",  # subsd xmm0, xmm1
    "f20f5ec1",  # divsd xmm0, xmm1
    "f20f51c1",  # sqrtsd xmm0, xmm1
    "f20f5903",  # mulsd xmm0, qword ptr [rbx]
    "f20f5803",  # addsd xmm0, qword ptr [rbx]
    "f30f1003",  # movss xmm0, dword ptr [rbx]
    "f30f1103",  # movss dword ptr [rbx], xmm0
    "f20f1003",  # movsd xmm0, qword ptr [rbx]
    "f20f1103",  # movsd qword ptr [rbx], xmm0
    "f20f10c1",  # movsd xmm0, xmm1
    "660f2ec1",  # ucomisd xmm0, xmm1
    "0f2ec1",  # ucomiss xmm0, xmm1
    "f2480f2ac0",  # cvtsi2sd xmm0, rax
    "f2480f2cc0",  # cvttsd2si rax, xmm0
    "f30f5ac1",  # cvtss2sd xmm0, xmm1
    "f20f5ac1",  # cvtsd2ss xmm0, xmm1
    "0f5bc1",  # cvtdq2ps xmm0, xmm1
    "660f5bc1",  # cvtps2dq xmm0, xmm1
    "660ffec1",  # paddd xmm0, xmm1
    "660ffe03",  # paddd xmm0, xmmword ptr [rbx]
    "660fd4c1",  # paddq xmm0, xmm1
    "660ffac1",  # psubd xmm0, xmm1
    "660f3840c1",  # pmulld xmm0, xmm1
    "660ff4c1",  # pmuludq xmm0, xmm1
    "660fdbc1",  # pand xmm0, xmm1
    "660febc1",  # por xmm0, xmm1
    "660f72f004",  # pslld xmm0, 4
    "660f73d004",  # psrlq xmm0, 4
    "660f73d804",  # psrldq xmm0, 4
    "660f76c1",  # pcmpeqd xmm0, xmm1
    "660f6fc1",  # movdqa xmm0, xmm1
    "660f6f03",  # movdqa xmm0, xmmword ptr [rbx]
    "660f7f03",  # movdqa xmmword ptr [rbx], xmm0
    "660f62c1",  # punpckldq xmm0, xmm1
    "660f3800c1",  # pshufb xmm0, xmm1
    # More integer forms compilers emit.
    "480fafc3",  # imul rax, rbx
    "486b0308",  # imul rax, qword ptr [rbx], 8
    "4869c378563412",  # imul rax, rbx, 0x12345678
    "488d0403",  # lea rax, [rbx + rax]
    "488d04c3",  # lea rax, [rbx + 8*rax]
    "488d44c308",  # lea rax, [rbx + 8*rax + 8]
    "8d0403",  # lea eax, [rbx + rax]
    "4c8d0403",  # lea r8, [rbx + rax]
    "480fb7c3",  # movzx rax, bx
    "480fbec3",  # movsx rax, bl
    "0fbfc3",  # movsx eax, bx
    "480f4fc3",  # cmovg rax, rbx
    "480f48c3",  # cmovs rax, rbx
    "4c01c0",  # add rax, r8
    "4d01c8",  # add r8, r9
    "48c1e020",  # shl rax, 32
    "48d1e0",  # shl rax, 1
    "48d1e8",  # shr rax, 1
    "48d1f8",  # sar rax, 1
    "d1e0",  # shl eax, 1
    "48f7e0",  # mul rax
    "4839c3",  # cmp rbx, rax
    "480faf4308",  # imul rax, qword ptr [rbx + 8]
    "ff5308",  # call qword ptr [rbx + 8]
    "ff6308",  # jmp qword ptr [rbx + 8]
    "8b0483",  # mov eax, dword ptr [rbx + 4*rax]
    "488b04c3",  # mov rax, qword ptr [rbx + 8*rax]
    "890483",  # mov dword ptr [rbx + 4*rax], eax
    "480f44c3",  # cmove rax, rbx
    "c3",  # ret
    "0f31",  # rdtsc
    "0f01f9",  # rdtscp
    "0fa2",  # cpuid
    "0f05",  # syscall
    # Forms of compiled C and C++ (bash, git, ls, perl, python3.11 and GCC 12's cc1 as Debian 12
    # ships them) that had no row: each seen at least three times, in at least two of them.
    "48836c242008",  # sub qword ptr [rsp + 0x20], 8
    "4933540028",  # xor rdx, qword ptr [r8 + rax + 0x28]
    "c0e805",  # shr al, 5
    "804b1002",  # or byte ptr [rbx + 0x10], 2
    "d3e8",  # shr eax, cl
    "836c241001",  # sub dword ptr [rsp + 0x10], 1
    "66250004",  # and ax, 0x400
    "834d0801",  # or dword ptr [rbp + 8], 1
    "c1c90f",  # ror ecx, 0xf
    "c1c007",  # rol eax, 7
    "660f6e4c241c",  # movd xmm1, dword ptr [rsp + 0x1c]
    "443a26",  # cmp r12b, byte ptr [rsi]
    "4823442438",  # and rax, qword ptr [rsp + 0x38]
    "443820",  # cmp byte ptr [rax], r12b
    "806010fd",  # and byte ptr [rax + 0x10], 0xfd
    "480fbe5d00",  # movsx rbx, byte ptr [rbp]
    "f744247800040000",  # test dword ptr [rsp + 0x78], 0x400
    "0f16442478",  # movhps xmm0, qword ptr [rsp + 0x78]
    "0b442418",  # or eax, dword ptr [rsp + 0x18]
    "660f28c1",  # movapd xmm0, xmm1
    "2b07",  # sub eax, dword ptr [rdi]
    "6641c1e90d",  # shr r9w, 0xd
    "836028fe",  # and dword ptr [rax + 0x28], 0xfffffffe
    "f3ab",  # rep stosd dword ptr [rdi], eax
    "660f2fc8",  # comisd xmm1, xmm0
    "331c24",  # xor ebx, dword ptr [rsp]
    "4183deff",  # sbb r14d, -1
    "66f7c6fdff",  # test si, 0xfffd
    "83d0ff",  # adc eax, -1
    "480fbaea3f",  # bts rdx, 0x3f
    "014c2448",  # add dword ptr [rsp + 0x48], ecx
    "450fbf2c50",  # movsx r13d, word ptr [r8 + rdx*2]
    "40323c06",  # xor dil, byte ptr [rsi + rax]
    "4809442418",  # or qword ptr [rsp + 0x18], rax
    "4018f6",  # sbb sil, sil
    "482930",  # sub qword ptr [rax], rsi
    "440f4cf0",  # cmovl r14d, eax
    "660f61c5",  # punpcklwd xmm0, xmm5
    "660f2e6c2408",  # ucomisd xmm5, qword ptr [rsp + 8]
    "488363f801",  # and qword ptr [rbx - 8], 1
    "09442408",  # or dword ptr [rsp + 8], eax
    "48818da800000000000800",  # or qword ptr [rbp + 0xa8], 0x80000
    "0f48ea",  # cmovs ebp, edx
    "660f54f8",  # andpd xmm7, xmm0
    "0f95442418",  # setne byte ptr [rsp + 0x18]
    "480f49c3",  # cmovns rax, rbx
    "0f4ec2",  # cmovle eax, edx
    "450f46c1",  # cmovbe r8d, r9d
    "410f49c4",  # cmovns eax, r12d
    "0f4fc2",  # cmovg eax, edx
    "d3f8",  # sar eax, cl
    "440f4dea",  # cmovge r13d, edx
    "f2410f2acd",  # cvtsi2sd xmm1, r13d
    "660f69cd",  # punpckhwd xmm1, xmm5
    "480f457b08",  # cmovne rdi, qword ptr [rbx + 8]
    "0f94442408",  # sete byte ptr [rsp + 8]
    "480fbf43fe",  # movsx rax, word ptr [rbx - 2]
    "66f7800e2772000708",  # test word ptr [rax + 0x72270e], 0x807
    "0818",  # or byte ptr [rax], bl
    "0fa3d8",  # bt eax, ebx
    "22542420",  # and dl, byte ptr [rsp + 0x20]
    "6681ea4028",  # sub dx, 0x2840
    "660fc6c001",  # shufpd xmm0, xmm0, 1
    "480fbaf53f",  # btr rbp, 0x3f
    "482132",  # and qword ptr [rdx], rsi
    "660d0f01",  # or ax, 0x10f
    "66c1c708",  # rol di, 8
    "f20f2cc0",  # cvttsd2si eax, xmm0
    "f3480f2ac2",  # cvtsi2ss xmm0, rdx
    "f20f5e442408",  # divsd xmm0, qword ptr [rsp + 8]
    "0f44442430",  # cmove eax, dword ptr [rsp + 0x30]
    "660f2f4c2428",  # comisd xmm1, xmmword ptr [rsp + 0x28]
    "66818c24f80000001003",  # or word ptr [rsp + 0xf8], 0x310
    "80040680",  # add byte ptr [rsi + rax], 0x80
    "f2480f2a442448",  # cvtsi2sd xmm0, qword ptr [rsp + 0x48]
    "0f12d0",  # movhlps xmm2, xmm0
    "f737",  # div dword ptr [rdi]
    "660f7e5efa",  # movd dword ptr [rsi - 6], xmm3
    "660f5405653b2b00",  # andpd xmm0, xmmword ptr [rip + 0x2b3b65]
    "660f574424e8",  # xorpd xmm0, xmmword ptr [rsp - 0x18]
    "660f72d001",  # psrld xmm0, 1
    "f30f1efa",  # endbr64
    "20442448",  # and byte ptr [rsp + 0x48], al
    "0f9ac1",  # setp cl
    "660f56e9",  # orpd xmm5, xmm1
    "4169451880aefeff",  # imul eax, dword ptr [r13 + 0x18], 0xfffeae80
    "66050028",  # add ax, 0x2800
    "41214528",  # and dword ptr [r13 + 0x28], eax
    "660f60d1",  # punpcklbw xmm2, xmm1
    "f20f5c442408",  # subsd xmm0, qword ptr [rsp + 8]
    "660f55e8",  # andnpd xmm5, xmm0
    "48f780a800000000000018",  # test qword ptr [rax + 0xa8], 0x18000000
    "0f454c2434",  # cmovne ecx, dword ptr [rsp + 0x34]
    "660f14c9",  # unpcklpd xmm1, xmm1
    "660f67c1",  # packuswb xmm0, xmm1
    "66334350",  # xor ax, word ptr [rbx + 0x50]
    "0f9bc1",  # setnp cl
    "660f68c1",  # punpckhbw xmm0, xmm1
    "660f14c1",  # unpcklpd xmm0, xmm1
    "f20fc2d806",  # cmpnlesd xmm3, xmm0
    "660fd4442410",  # paddq xmm0, xmmword ptr [rsp + 0x10]
    "660f283c24",  # movapd xmm7, xmmword ptr [rsp]
    "660f6ae9",  # punpckhdq xmm5, xmm1
    "80e901",  # sub cl, 1
    "48f7742410",  # div qword ptr [rsp + 0x10]
    "660f65d0",  # pcmpgtw xmm2, xmm0
    "6683634207",  # and word ptr [rbx + 0x42], 7
    "f6d8",  # neg al
    "480fbaf93f",  # btc rcx, 0x3f
    "0f2fc1",  # comiss xmm0, xmm1
    "48d3c6",  # rol rsi, cl
    "835c2414ff",  # sbb dword ptr [rsp + 0x14], -1
    "0f2f056ffe1b00",  # comiss xmm0, dword ptr [rip + 0x1bfe6f]
    "0fabc8",  # bts eax, ecx
    "660ffbc8",  # psubq xmm1, xmm0
    "d0f8",  # sar al, 1
    "4c0f43742418",  # cmovae r14, qword ptr [rsp + 0x18]
    "8354241c00",  # adc dword ptr [rsp + 0x1c], 0
    "0f9244240b",  # setb byte ptr [rsp + 0xb]
    "0f9f442408",  # setg byte ptr [rsp + 8]
    "48f75810",  # neg qword ptr [rax + 0x10]
    "f20f2a4c2430",  # cvtsi2sd xmm1, dword ptr [rsp + 0x30]
    "410f90c7",  # seto r15b
    "4bc144900420",  # rol qword ptr [r8 + r10*4 + 4], 0x20
    "80340606",  # xor byte ptr [rsi + rax], 6
    "833004",  # xor dword ptr [rax], 4
    "f73c8f",  # idiv dword ptr [rdi + rcx*4]
    "48f77c2418",  # idiv qword ptr [rsp + 0x18]
    "d1642474",  # shl dword ptr [rsp + 0x74], 1
    "0f9e44243f",  # setle byte ptr [rsp + 0x3f]
    "48f7c2fdffffff",  # test rdx, -3
    "6683404801",  # add word ptr [rax + 0x48], 1
    "66037c240c",  # add di, word ptr [rsp + 0xc]
    "660fef0424",  # pxor xmm0, xmmword ptr [rsp]
    "660fdb442450",  # pand xmm0, xmmword ptr [rsp + 0x50]
    "48c16c24080a",  # shr qword ptr [rsp + 8], 0xa
    "4587c8",  # xchg r8d, r9d
    "480f424308",  # cmovb rax, qword ptr [rbx + 8]
    "0f96442428",  # setbe byte ptr [rsp + 0x28]
    "2a44240c",  # sub al, byte ptr [rsp + 0xc]
    "660f5cc8",  # subpd xmm1, xmm0
    "440f42542430",  # cmovb r10d, dword ptr [rsp + 0x30]
    "440f4d0424",  # cmovge r8d, dword ptr [rsp]
    "660f105010",  # movupd xmm2, xmmword ptr [rax + 0x10]
    "440f487c2414",  # cmovs r15d, dword ptr [rsp + 0x14]
    "f20fc2e501",  # cmpltsd xmm4, xmm5
    "f30f2ae0",  # cvtsi2ss xmm4, eax
    "f30f59600c",  # mulss xmm4, dword ptr [rax + 0xc]
    "41ff4c2404",  # dec dword ptr [r12 + 4]
    "4883534800",  # adc qword ptr [rbx + 0x48], 0
    "660fbe0c13",  # movsx cx, byte ptr [rbx + rdx]
    "0f174c2438",  # movhps qword ptr [rsp + 0x38], xmm1
    "6641832a01",  # sub word ptr [r10], 1
    "f20f5f442470",  # maxsd xmm0, qword ptr [rsp + 0x70]
    "480f494c2410",  # cmovns rcx, qword ptr [rsp + 0x10]
    "48f7942480000000",  # not qword ptr [rsp + 0x80]
    "f6540250",  # not byte ptr [rdx + rax + 0x50]
    "0f9384240f010000",  # setae byte ptr [rsp + 0x10f]
    "0f43bc2420050000",  # cmovae edi, dword ptr [rsp + 0x520]
    # Direct branches and calls: the target becomes a label in the llvm-mca input.
    "7000",  # jo rel8
    "7100",  # jno
    "7200",  # jb
    "7300",  # jae
    "7400",  # je
    "7500",  # jne
    "7600",  # jbe
    "7700",  # ja
    "7800",  # js
    "7900",  # jns
    "7a00",  # jp
    "7b00",  # jnp
    "7c00",  # jl
    "7d00",  # jge
    "7e00",  # jle
    "7f00",  # jg
    "eb00",  # jmp rel8
    "e900000000",  # jmp rel32
    "e800000000",  # call rel32
)
"""Common forms (instruction bytes) that get a derived cost whether or not a fixture uses them."""

_RIP_RELATIVE = re.compile(r"\[rip [+-] (?:0x[0-9a-f]+|\d+)\]")
_ERROR_LINE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):\d+: error: (?P<what>.*)$", re.MULTILINE)
_VERSION_LINE = re.compile(r"LLVM version \S+")


class DeriveError(Exception):
    """Something the user must fix: reported as one line, exit status 2."""


@dataclass(frozen=True)
class McaInfo:
    """llvm-mca's instruction-info figures for one instruction."""

    uops: int
    latency: int
    rthroughput: float


@dataclass(frozen=True)
class McaRegion:
    """One analysed code region: its summary, per-instruction figures and port pressure per iteration."""

    name: str
    iterations: int
    total_cycles: int
    block_rthroughput: float
    dispatch_width: int
    info: tuple[McaInfo, ...]
    pressure: tuple[tuple[str, float], ...] = ()


# --------------------------------------------------------------------------- llvm-mca


def find_llvm_mca(explicit: str | None) -> str:
    """The llvm-mca executable to use: `explicit`, or the one on PATH."""
    candidate = explicit or shutil.which("llvm-mca")
    if candidate is None or (explicit is not None and shutil.which(explicit) is None):
        raise DeriveError(
            f"llvm-mca not found{f' at {explicit}' if explicit else ' on PATH'} "
            "(install LLVM, e.g. apt-get install llvm-14, or pass --llvm-mca PATH)"
        )
    return candidate


def mca_version(llvm_mca: str) -> str:
    """The 'LLVM version X' part of `llvm-mca --version` (the host-CPU line varies by machine)."""
    try:
        out = subprocess.run([llvm_mca, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError as exc:
        raise DeriveError(f"cannot run {llvm_mca}: {exc.strerror or exc}") from None
    match = _VERSION_LINE.search(out)
    if match is None:
        raise DeriveError(f"{llvm_mca} --version printed no 'LLVM version' line")
    return match.group(0)


_CAPSTONE_SIZE_SLIPS = {"comisd": ("xmmword ptr", "qword ptr")}
"""Memory operands capstone prints with the wrong size (``comisd`` reads 8 bytes), by mnemonic."""

_MCA_STAND_INS = {"endbr64": "nop"}
"""Instructions LLVM 14 has no scheduling data for, timed as what they are on the CPU (``endbr64``
is a NOP: LLVM would give it its 100-cycle placeholder)."""


def mca_asm(insn: capstone.CsInsn, target_label: str = ".Lt") -> str:
    """`insn` in Intel syntax llvm-mc accepts: direct targets become a label, RIP offsets a constant."""
    if insn.mnemonic in _MCA_STAND_INS:
        return _MCA_STAND_INS[insn.mnemonic]
    operands = insn.op_str
    branchy = insn.group(capstone.CS_GRP_JUMP) or insn.group(capstone.CS_GRP_CALL)
    if branchy and len(insn.operands) == 1 and insn.operands[0].type == capstone.x86.X86_OP_IMM:
        operands = target_label
    operands = _RIP_RELATIVE.sub("[rip + 64]", operands)
    wrong, right = _CAPSTONE_SIZE_SLIPS.get(insn.mnemonic, ("", ""))
    if wrong:
        operands = operands.replace(wrong, right)
    return f"{insn.mnemonic} {operands}".strip()


def run_mca(
    llvm_mca: str, mcpu: str, regions: Sequence[tuple[str, Sequence[str]]], iterations: int
) -> tuple[list[McaRegion], list[tuple[int, int, str]]]:
    """Analyse each (name, lines) region; returns the regions and the lines llvm-mca rejected.

    Rejected lines come back as (region index, line index, message) and are left out of the
    region's figures, so `info` may be shorter than the region's lines: callers drop them and
    re-run (see `analyse`).
    """
    text = [".intel_syntax noprefix", ".Lt:"]
    where: dict[int, tuple[int, int]] = {}
    for r, (name, lines) in enumerate(regions):
        text.append(f"# LLVM-MCA-BEGIN {name}")
        for i, line in enumerate(lines):
            text.append(line)
            where[len(text)] = (r, i)
        text.append(f"# LLVM-MCA-END {name}")
    with tempfile.TemporaryDirectory(prefix="derive-costs-") as tmp:
        source = Path(tmp) / "input.s"
        source.write_text("\n".join(text) + "\n", encoding="utf-8")
        args = [llvm_mca, f"-mcpu={mcpu}", f"-iterations={iterations}", "--json", str(source)]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise DeriveError(f"cannot run {llvm_mca}: {exc.strerror or exc}") from None
    rejected = []
    for match in _ERROR_LINE.finditer(proc.stderr):
        lineno = int(match.group("line"))
        if lineno not in where:
            raise DeriveError(f"llvm-mca: {match.group('what')} (input line {lineno})")
        rejected.append((*where[lineno], match.group("what").strip()))
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
        raise DeriveError(f"llvm-mca failed (exit {proc.returncode}): {first}")
    try:
        report = json.loads(proc.stdout)
        resources = [resource_name(name) for name in report["TargetInfo"]["Resources"]]
        parsed = [_region(raw, resources) for raw in report["CodeRegions"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DeriveError(f"llvm-mca printed JSON this tool does not understand: {exc}") from None
    return parsed, rejected


def resource_name(raw: str) -> str:
    """A short, printable name for one of LLVM's resources: ``SKLPort0`` -> ``p0``, ``Zn3ALU0`` -> ``alu0``."""
    name = re.sub(r"^(SKL|Zn3|Zn4)", "", raw)
    name = "".join(ch if ch.isalnum() else "." if ch == "." else str(ord(ch)) for ch in name).lower()
    return "p" + name[4:] if name.startswith("port") else name


def _pressure(raw: dict[str, Any], resources: Sequence[str]) -> tuple[tuple[str, float], ...]:
    totals: dict[str, float] = {}
    for row in raw.get("ResourcePressureView", {}).get("ResourcePressureInfo", []):
        if int(row["InstructionIndex"]) == 0:
            name = resources[int(row["ResourceIndex"])]
            totals[name] = totals.get(name, 0.0) + float(row["ResourceUsage"])
    return tuple(sorted((name, round(value, 3)) for name, value in totals.items() if value > 0))


def _region(raw: dict[str, Any], resources: Sequence[str]) -> McaRegion:
    summary = raw["SummaryView"]
    info = tuple(
        McaInfo(int(row["NumMicroOpcodes"]), int(row["Latency"]), float(row["RThroughput"]))
        for row in raw["InstructionInfoView"]["InstructionList"]
    )
    return McaRegion(
        name=str(raw.get("Name", "")),
        iterations=int(summary["Iterations"]),
        total_cycles=int(summary["TotalCycles"]),
        block_rthroughput=float(summary["BlockRThroughput"]),
        dispatch_width=int(summary["DispatchWidth"]),
        info=info,
        pressure=_pressure(raw, resources),
    )


# --------------------------------------------------------------------------- forms


def decoder() -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def sweep_elf(path: Path) -> list[capstone.CsInsn]:
    """Every instruction of a linear sweep of `path`'s executable segments, in address order."""
    try:
        image = load_elf(path)
    except ElfError as exc:
        raise DeriveError(str(exc)) from None
    cs = decoder()
    out: list[capstone.CsInsn] = []
    for segment in image.segments:
        if segment.perms & Perm.X:
            out.extend(cs.disasm(segment.data, segment.vaddr))
    return out


def builtin_instructions() -> list[capstone.CsInsn]:
    cs = decoder()
    out = []
    for encoding in BUILTIN_FORMS:
        code = bytes.fromhex(encoding)
        insns = list(cs.disasm(code, 0x1000))
        if len(insns) != 1 or insns[0].size != len(code):
            raise DeriveError(f"built-in form {encoding} is not exactly one instruction")
        out.extend(insns)
    return out


def elf_paths(elf_dir: Path) -> list[Path]:
    paths = sorted(elf_dir.glob("*.elf"))
    if not paths:
        raise DeriveError(f"{elf_dir}: no *.elf files")
    return paths


def representatives(instructions: Iterable[capstone.CsInsn]) -> dict[str, capstone.CsInsn]:
    """The first instruction seen of each form (built-in forms come first: stable representatives)."""
    forms: dict[str, capstone.CsInsn] = {}
    for insn in instructions:
        forms.setdefault(form_key(insn), insn)
    return forms


# --------------------------------------------------------------------------- costs


def round_half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2))


def fused_uops(info: McaInfo, insn: capstone.CsInsn) -> int:
    """Micro-ops in the fused domain: LLVM counts a load or store with its operation as two (or
    more) micro-ops; the rename stage sees them micro-fused as one fewer."""
    has_memory = insn.mnemonic in ("push", "pop", "call", "ret") or (
        insn.mnemonic != "lea" and any(op.type == capstone.x86.X86_OP_MEM for op in insn.operands)
    )
    return max(1, info.uops - 1) if has_memory and info.uops >= 2 else max(1, info.uops)


def formula_cost(info: McaInfo, insn: capstone.CsInsn, width: int) -> int:
    """The formula, in exact arithmetic: max(1, round(1000 * fused uops / width))."""
    return max(1, round_half_up(Fraction(fused_uops(info, insn) * MILLICYCLES_PER_CYCLE, width)))


def analyse(llvm_mca: str, mcpu: str, forms: dict[str, capstone.CsInsn]) -> tuple[dict[str, McaInfo], int, list[str]]:
    """llvm-mca's figures per form, its dispatch width, and the forms llvm-mca could not assemble."""
    keys = sorted(forms)
    lines = [mca_asm(forms[k]) for k in keys]
    unassembled: list[str] = []
    while True:
        regions, rejected = run_mca(llvm_mca, mcpu, [("forms", lines)], iterations=1)
        if not rejected:
            break
        drop = {i for _, i, _ in rejected}
        unassembled.extend(f"{keys[i]}: {lines[i]!r}: {msg}" for _, i, msg in rejected)
        keys = [k for i, k in enumerate(keys) if i not in drop]
        lines = [ln for i, ln in enumerate(lines) if i not in drop]
    if len(regions) != 1 or len(regions[0].info) != len(keys):
        raise DeriveError(f"llvm-mca reported {len(regions[0].info)} instructions for {len(keys)} input lines")
    return dict(zip(keys, regions[0].info, strict=True)), regions[0].dispatch_width, sorted(unassembled)


def port_pressure(llvm_mca: str, mcpu: str, lines: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each form's average pressure per LLVM resource, from a region of that form alone."""
    keys = sorted(lines)
    regions, rejected = run_mca(llvm_mca, mcpu, [(key, [lines[key]]) for key in keys], PORT_ITERATIONS)
    if rejected or len(regions) != len(keys):
        raise DeriveError(f"llvm-mca rejected a form it had assembled before ({len(rejected)} lines)")
    return {key: dict(region.pressure) for key, region in zip(keys, regions, strict=True)}


def build_table(cpu: str, llvm_mca: str, elf_dir: Path) -> dict[str, Any]:
    spec = CPUS[cpu]
    paths = elf_paths(elf_dir)
    instructions = [insn for path in paths for insn in sweep_elf(path)]
    forms = representatives([*builtin_instructions(), *instructions])
    figures, width, unassembled = analyse(llvm_mca, spec.mcpu, forms)
    ports = port_pressure(llvm_mca, spec.mcpu, {key: mca_asm(forms[key]) for key in figures})
    machine, measured, throughputs = measured_parameters(spec)
    rename = machine["width"]
    rows: dict[str, dict[str, Any]] = {}
    for key, insn in forms.items():
        info = figures.get(key)
        kind = category(insn)
        row: dict[str, Any] = {"asm": mca_asm(insn), "category": kind}
        if info is not None:
            latency = measured.get(key, info.latency)
            row.update(uops=fused_uops(info, insn), latency=latency, rthroughput=round(info.rthroughput, 6))
            if key in measured:
                row.update(latency_source="measured")
            form_ports = ports[key]
            if key in measured and form_ports and max(form_ports.values()) > latency:
                # A dependent chain of the form ran at its measured latency: no unit is busier than that.
                scale = latency / max(form_ports.values())
                form_ports = {port: round(load * scale, 3) for port, load in form_ports.items()}
            if key in throughputs and form_ports:
                # Independent instances ran at the measured rate: no port is busier than that.
                target = throughputs[key]
                form_ports = {port: round(min(load, target), 3) for port, load in form_ports.items()}
                row.update(rthroughput=target, rthroughput_source="measured")
            row.update(ports=form_ports)
        if kind in FIXED_COSTS:
            row.update(cost=FIXED_COSTS[kind][0], source="fixed")
        elif info is not None:
            row.update(cost=formula_cost(info, insn, rename), source="mca")
        else:
            continue  # not assemblable: CostModel falls back to the category default
        rows[key] = row
    return {
        "format": FORMAT_VERSION,
        "cpu": cpu,
        "description": spec.description,
        "frequency_hz": spec.frequency_hz,
        "units": "millicycles (1 cycle = 1000)",
        "formula": FORMULA,
        "dispatch_width": width,
        "machine": machine,
        "fixed": {kind: {"cost": cost, "why": why} for kind, (cost, why) in FIXED_COSTS.items()},
        "defaults": DEFAULT_COSTS,
        "llvm_mca": {
            "version": mca_version(llvm_mca),
            "args": [f"-mcpu={spec.mcpu}", "-iterations=1", "--json"],
            "port_args": [f"-mcpu={spec.mcpu}", f"-iterations={PORT_ITERATIONS}", "--json"],
        },
        "generator": "tools/derive_costs.py",
        "sources": [path.name for path in paths]
        + [f"{len(BUILTIN_FORMS)} built-in forms"]
        + ([spec.measured] if spec.measured else []),
        "unassembled": unassembled,
        "forms": rows,
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", choices=sorted(CPUS), default="skylake", help="CPU model (default skylake)")
    parser.add_argument("--out", type=Path, help="output file (default emu/data/costs-<cpu>.json)")
    parser.add_argument("--elf-dir", type=Path, default=DEFAULT_ELF_DIR, help="folder of *.elf to sweep")
    parser.add_argument("--llvm-mca", help="llvm-mca executable (default: the one on PATH)")
    parser.add_argument("--check", action="store_true", help="compare with the output file instead of writing")
    args = parser.parse_args(argv)
    out: Path = args.out or DATA_DIR / f"costs-{args.cpu}.json"
    try:
        llvm_mca = find_llvm_mca(args.llvm_mca)
        text = render(build_table(args.cpu, llvm_mca, args.elf_dir))
        if args.check:
            try:
                current = out.read_text(encoding="utf-8")
            except OSError as exc:
                raise DeriveError(f"{out}: cannot read: {exc.strerror or exc}") from None
            if current != text:
                print(f"derive_costs: {out} is stale: re-run tools/derive_costs.py", file=sys.stderr)
                return 1
            return 0
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(out)
        except OSError as exc:
            raise DeriveError(f"{out}: cannot write: {exc.strerror or exc}") from None
    except DeriveError as exc:
        print(f"derive_costs: {exc}", file=sys.stderr)
        return 2
    forms = json.loads(text)["forms"]
    print(f"derive_costs: wrote {out} ({len(forms)} forms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
