"""The CPU models the EriX world can run its guests on."""

from __future__ import annotations

import functools

from emu.accounting import CpuModel
from emu.costmodel import CPU_NAMES, DEFAULT_MODEL

DEFAULT_CPU = DEFAULT_MODEL


@functools.lru_cache(maxsize=len(CPU_NAMES))
def cpu_model(name: str = DEFAULT_CPU) -> CpuModel:
    """Loaded once per name: the same functions each time, so per-image tables are built once."""
    from emu.costmodel import CostModel

    model = CostModel.load(name)
    return CpuModel(model.name, model.frequency_hz, model.cost, model.summarize_code, model.machine)


def default_cpu_model() -> CpuModel:
    return cpu_model(DEFAULT_CPU)
