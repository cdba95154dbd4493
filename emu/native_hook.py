"""Registering a hook whose callback is a C function (from one of emu's extension libraries).

The binding's own `hook_add` wraps a Python callable and forces the user data to 0, so a native
callback goes through the C API directly: the function's address, and a pointer to the ctypes
structure it reads and writes (the caller keeps that structure alive as long as the engine).
"""

from __future__ import annotations

import ctypes

from unicorn import unicorn_const as uc_const
from unicorn.unicorn_py3.unicorn import uclib


def add_native_hook(
    uc: object,
    kind: int,
    function: ctypes._CFuncPtr,  # type: ignore[name-defined]
    state: ctypes.Structure | None,
    begin: int = 1,
    end: int = 0,
    *extra: object,
) -> int:
    """Hook `function` (a ctypes function of a loaded library) as `kind` on [begin, end] (all
    code when begin > end) with `state` (or nothing) as its user data; `extra` are the kind's own arguments
    (an instruction id for UC_HOOK_INSN). The hook's handle; RuntimeError if Unicorn refuses."""
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(
        uc._uch,  # type: ignore[attr-defined]
        ctypes.byref(handle),
        kind,
        ctypes.cast(function, ctypes.c_void_p),
        None if state is None else ctypes.cast(ctypes.pointer(state), ctypes.c_void_p),
        ctypes.c_uint64(begin),
        ctypes.c_uint64(end),
        *extra,
    )
    if status != uc_const.UC_ERR_OK:
        name = getattr(function, "__name__", "native hook")
        raise RuntimeError(f"uc_hook_add for {name} failed: {status}")
    return int(handle.value)
