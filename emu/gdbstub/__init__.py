"""A GDB remote serial protocol server for the emulator (`python -m emu run --gdb PORT`).

`packets` frames, `commands` and `queries` answer, `registers` describes the x86-64 target,
`server` owns the socket and implements `target.Debugger`; a machine implements
`target.DebugTarget` (procd_model/debug.py does for the modelled world).
"""
