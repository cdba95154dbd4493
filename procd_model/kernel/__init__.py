"""The modelled EriX kernel (see core.py); the names other modules import live here."""

from procd_model.kernel.core import (
    KERNEL_PID,
    Endpoint,
    ImageLayoutError,
    Kernel,
    Notification,
    Process,
    ProcState,
    StopReason,
)

__all__ = [
    "KERNEL_PID",
    "Endpoint",
    "ImageLayoutError",
    "Kernel",
    "Notification",
    "ProcState",
    "Process",
    "StopReason",
]
