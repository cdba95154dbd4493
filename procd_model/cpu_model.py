"""The CPU model the EriX world runs its guests on."""

from __future__ import annotations

import functools

from emu.accounting import CpuModel


@functools.lru_cache(maxsize=1)
def default_cpu_model() -> CpuModel:
    """Loaded once: the same cost function each time, so per-image cost tables are swept once."""
    from emu.costmodel import CostModel

    model = CostModel.load("skylake")
    return CpuModel(model.name, model.frequency_hz, model.cost, model.summarize, model.machine)
