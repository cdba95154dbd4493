"""The modelled EriX kernel, as a package: `Kernel` (core.py) is the object the world drives; the
kernel's work lives in `sched`, `run`, `syscalls`, `ipc`, `notify`, `control` and `lifecycle`,
its state in `state` (plain data), what the world injects in `inject`."""

from emu.events import KERNEL_PID
from procd_model.kernel.core import Kernel
from procd_model.kernel.inject import DeathObserver, Injector, NoInjection, ScriptedFaults
from procd_model.kernel.lifecycle import ROOT_PID
from procd_model.kernel.outcome import ImageLayoutError, StopReason
from procd_model.kernel.state import (
    ActorContext,
    Endpoint,
    GuestContext,
    InRecv,
    InReply,
    InSend,
    InWait,
    KernelState,
    Notification,
    Process,
    RunState,
    snapshot_state,
)

__all__ = [
    "KERNEL_PID",
    "ROOT_PID",
    "ActorContext",
    "DeathObserver",
    "Endpoint",
    "GuestContext",
    "ImageLayoutError",
    "InRecv",
    "InReply",
    "InSend",
    "InWait",
    "Injector",
    "Kernel",
    "KernelState",
    "NoInjection",
    "Notification",
    "Process",
    "RunState",
    "ScriptedFaults",
    "StopReason",
    "snapshot_state",
]
