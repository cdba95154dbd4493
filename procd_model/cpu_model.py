"""The CPU model the EriX world runs its guests on."""

from __future__ import annotations

from emu.accounting import CpuModel


def default_cpu_model() -> CpuModel:
    from emu.costmodel import CostModel

    model = CostModel.load("skylake")
    return CpuModel(model.name, model.frequency_hz, model.cost)
