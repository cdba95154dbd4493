"""The loop kernels of the cycle-model suite, as assembly source (Intel syntax, GNU as).

Each kernel is a loop body that runs with `r15` counting iterations down (``dec r15; jnz``),
after a setup that may use `rdi`, which points at a 64 KiB zeroed buffer. The same source runs in
the emulator (benches/kernels.py), in llvm-mca (the body and the loop branch as one region) and on
the host (benches/measure.py, timed with ``lfence; rdtsc``). `CALIBRATION` kernels measure single
figures of the host CPU (latencies, the mispredict refill) for the Zen 4 model's data.
"""

from __future__ import annotations

from dataclasses import dataclass

BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Kernel:
    name: str
    what: str
    body: str
    setup: str = ""
    tail: str = ""
    """Code after the loop (reached only by jumps from the body), e.g. a function the body calls."""
    mca: str | None = None
    """The body as llvm-mca should see it (its dynamic instruction sequence), when it differs."""

    def mca_body(self) -> str:
        return self.mca if self.mca is not None else self.body


def _lines(*insns: str) -> str:
    return "\n".join(insns)


XORSHIFT = _lines(
    "mov rax, rbx",
    "shl rax, 13",
    "xor rbx, rax",
    "mov rax, rbx",
    "shr rax, 7",
    "xor rbx, rax",
    "mov rax, rbx",
    "shl rax, 17",
    "xor rbx, rax",
)

SUITE = (
    Kernel("add_chain", "8 dependent adds", _lines(*["add rax, rbx"] * 8), "mov ebx, 3"),
    Kernel(
        "independent_alu",
        "8 independent adds",
        _lines(*(f"add {r}, 1" for r in ("rax", "rbx", "rcx", "rdx", "rsi", "r8", "r9", "r10"))),
    ),
    Kernel("imul_chain", "4 dependent imuls", _lines(*["imul rax, rbx"] * 4), "mov eax, 1\nmov ebx, 3"),
    Kernel(
        "div_chain", "2 dependent 32-bit divides", _lines(*["xor edx, edx", "div ecx"] * 2), "mov eax, 1000\nmov ecx, 1"
    ),
    Kernel(
        "pointer_chase",
        "4 dependent loads through a self-pointer",
        _lines(*["mov rax, qword ptr [rax]"] * 4),
        "lea rax, [rdi + 8192]\nmov qword ptr [rax], rax",
    ),
    Kernel(
        "copy",
        "memcpy-like: 4 loads and 4 stores of 8 bytes",
        _lines(
            *(
                line
                for k, reg in enumerate(("rax", "rbx", "rcx", "rdx"))
                for line in (f"mov {reg}, qword ptr [rsi + {8 * k}]", f"mov qword ptr [rdi + {8 * k}], {reg}")
            )
        ),
        "lea rsi, [rdi + 4096]",
    ),
    Kernel(
        "call_ret",
        "call a function that adds and returns",
        "call 3f",
        tail="3:\nadd rax, 1\nret",
        mca=_lines("call .Lt", "add rax, 1", "ret"),
    ),
    Kernel(
        "unpredictable",
        "xorshift step, then a branch on its low bit",
        _lines(XORSHIFT, "test bl, 1", "jz 2f", "add rcx, 1", "2:"),
        "movabs rbx, 0x2545F4914F6CDD1D",
        mca=_lines(XORSHIFT, "test bl, 1", "je .Lt", "add rcx, 1"),
    ),
    Kernel(
        "mov_lea",
        "moves and two-operand leas in a chain",
        _lines("mov rcx, rax", "lea rax, [rcx + rbx]", "mov rdx, rax", "lea rax, [rdx + 8]"),
        "mov ebx, 5",
    ),
    Kernel(
        "sse_chain",
        "mulps then addps on one register",
        _lines("mulps xmm0, xmm1", "addps xmm0, xmm2"),
        "xorps xmm0, xmm0\nxorps xmm1, xmm1\nxorps xmm2, xmm2",
    ),
    Kernel(
        "load_add",
        "4 adds from memory into one register",
        _lines(*(f"add rax, qword ptr [rdi + {8 * k}]" for k in range(4))),
    ),
    Kernel(
        "sse_independent",
        "4 independent mulps+addps chains",
        _lines(*(f"{op} xmm{k}, xmm{k + 8}" for k in range(4) for op in ("mulps", "addps"))),
        "\n".join(f"xorps xmm{k}, xmm{k}" for k in range(16)),
    ),
)

CALIBRATION = (
    Kernel("cal_add", "16 dependent adds: one cycle each", _lines(*["add rax, rbx"] * 16)),
    Kernel("cal_imul", "imul latency", _lines(*["imul rax, rbx"] * 8), "mov eax, 1\nmov ebx, 3"),
    Kernel(
        "cal_div32",
        "div r32 latency (quotient 1000)",
        _lines(*["xor edx, edx", "div ecx"] * 4),
        "mov eax, 1000\nmov ecx, 1",
    ),
    Kernel("cal_div64", "div r64 latency", _lines(*["xor edx, edx", "div rcx"] * 4), "mov eax, 1000\nmov ecx, 1"),
    Kernel(
        "cal_load",
        "load-to-use latency",
        _lines(*["mov rax, qword ptr [rax]"] * 8),
        "lea rax, [rdi + 8192]\nmov qword ptr [rax], rax",
    ),
    Kernel("cal_mulps", "mulps latency", _lines(*["mulps xmm0, xmm1"] * 8), "xorps xmm0, xmm0\nxorps xmm1, xmm1"),
    Kernel("cal_addps", "addps latency", _lines(*["addps xmm0, xmm1"] * 8), "xorps xmm0, xmm0\nxorps xmm1, xmm1"),
    Kernel(
        "cal_forward",
        "store forwarding: store and reload through the stack, plus one add",
        _lines(*["mov qword ptr [rsp - 8], rax", "mov rax, qword ptr [rsp - 8]", "add rax, 1"] * 4),
    ),
    Kernel("cal_taken", "an empty loop: one taken branch per iteration", ""),
    Kernel("cal_callret", "call a function that only returns", "call 3f", tail="3:\nret"),
    Kernel(
        "cal_xorshift",
        "xorshift step, no branch",
        _lines(XORSHIFT, "test bl, 1", "add rcx, 1"),
        "movabs rbx, 0x2545F4914F6CDD1D",
    ),
    Kernel(
        "cal_random",
        "xorshift step, branch on its low bit (half mispredicted)",
        _lines(XORSHIFT, "test bl, 1", "jz 2f", "add rcx, 1", "2:"),
        "movabs rbx, 0x2545F4914F6CDD1D",
    ),
    Kernel(
        "cal_stores",
        "independent stores",
        _lines(*(f"mov qword ptr [rdi + {8 * k}], rax" for k in range(8))),
    ),
    Kernel(
        "cal_alu",
        "independent adds",
        _lines(*(f"add {r}, 1" for r in ("rax", "rbx", "rcx", "rdx", "rsi", "r8", "r9", "r10") * 2)),
    ),
)


def loop_source(kernel: Kernel, end: str) -> str:
    """The kernel as assembly: setup, the aligned loop counting r15 down, `end`, then its tail."""
    return "\n".join([kernel.setup, ".p2align 6", "1:", kernel.body, "dec r15", "jnz 1b", end, kernel.tail, ""])
