"""The fixed CPU that `cpuid` describes to every guest.

A baseline x86-64 Skylake-class part: SSE through SSE4.2, POPCNT and CX16; no AVX (Unicorn cannot
run it), no RDRAND or RDSEED (they would return host randomness), no XSAVE. The answers never
depend on the host.
"""

from __future__ import annotations

VENDOR = b"GenuineIntel"
MAX_BASIC_LEAF = 0x7
MAX_EXTENDED_LEAF = 0x8000_0001

FAMILY_MODEL_STEPPING = 0x0005_06E3
"""Family 6, model 0x5E (Skylake client), stepping 3."""

# leaf 1, ecx
_SSE3, _PCLMULQDQ, _SSSE3, _CX16, _SSE41, _SSE42, _POPCNT = 0, 1, 9, 13, 19, 20, 23
# leaf 1, edx
_FPU, _TSC, _CX8, _CMOV, _CLFSH, _MMX, _FXSR, _SSE, _SSE2 = 0, 4, 8, 15, 19, 23, 24, 25, 26
# leaf 0x80000001
_LAHF_LM, _SYSCALL, _NX, _LM = 0, 11, 20, 29


def _bits(*positions: int) -> int:
    value = 0
    for position in positions:
        value |= 1 << position
    return value


def _vendor_words() -> tuple[int, int, int]:
    words = [int.from_bytes(VENDOR[i : i + 4], "little") for i in (0, 4, 8)]
    return words[0], words[1], words[2]  # ebx, edx, ecx


def cpuid_leaf(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    """(eax, ebx, ecx, edx) for `cpuid` with eax=leaf, ecx=subleaf."""
    if leaf == 0:
        ebx, edx, ecx = _vendor_words()
        return MAX_BASIC_LEAF, ebx, ecx, edx
    if leaf == 1:
        ecx = _bits(_SSE3, _PCLMULQDQ, _SSSE3, _CX16, _SSE41, _SSE42, _POPCNT)
        edx = _bits(_FPU, _TSC, _CX8, _CMOV, _CLFSH, _MMX, _FXSR, _SSE, _SSE2)
        return FAMILY_MODEL_STEPPING, 0x0001_0800, ecx, edx
    if leaf == 0x8000_0000:
        return MAX_EXTENDED_LEAF, 0, 0, 0
    if leaf == 0x8000_0001:
        return 0, 0, _bits(_LAHF_LM), _bits(_SYSCALL, _NX, _LM)
    return 0, 0, 0, 0  # leaf 7 (no AVX2, no RDSEED) and every other leaf: nothing
