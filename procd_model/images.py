"""The boot-image table: which ELF file each CREATE_PROCESS image id loads."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from emu.elf import ElfImage, load_elf
from procd_model.abi import IMAGE_NOTE, IMAGE_NOTE_MAGIC, IMAGE_NOTE_VERSION, Role


@dataclass(frozen=True)
class BootImage:
    image_id: int
    name: str
    filename: str
    spawns: tuple[str, ...] = ()
    """Images its processes ask procd to spawn (SPAWN), so a scenario may inject faults into them."""


BOOT_IMAGES: tuple[BootImage, ...] = (
    BootImage(1, "procd", "procd.elf"),
    BootImage(2, "phase0-exit", "phase0-exit.elf"),
    BootImage(3, "phase0-fault-kill", "phase0-fault-kill.elf"),
    BootImage(4, "phase0-isolation-a", "phase0-isolation-a.elf"),
    BootImage(5, "phase0-isolation-b", "phase0-isolation-b.elf"),
    BootImage(6, "phase0-probe", "phase0-probe.elf"),
    BootImage(7, "phase1-lookup-client", "phase1-lookup-client.elf"),
    BootImage(8, "phase1-time-client", "phase1-time-client.elf"),
    BootImage(9, "phase2-irq-client", "phase2-irq-client.elf"),
    BootImage(10, "svc-stub", "svc-stub.elf"),
    BootImage(11, "phase1-spawner", "phase1-spawner.elf", spawns=("phase0-exit",)),
)


def fixtures_dir() -> Path:
    """The committed images: fixtures/elf in a checkout, procd_model/fixtures in an install."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "fixtures" / "elf", package / "fixtures" / "elf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the committed ELF fixtures are missing (fixtures/elf)")


def boot_image(image_id: int) -> BootImage | None:
    for image in BOOT_IMAGES:
        if image.image_id == image_id:
            return image
    return None


def boot_image_named(name: str) -> BootImage:
    for image in BOOT_IMAGES:
        if image.name == name:
            return image
    raise KeyError(name)


@functools.cache
def load_boot_image(image_id: int) -> ElfImage:
    image = boot_image(image_id)
    if image is None:
        raise KeyError(image_id)
    return load_elf(fixtures_dir() / image.filename, name=image.name)


def image_note(image: ElfImage) -> dict[str, int] | None:
    """The image's .erix_image note, if it has one with the right magic and version."""
    note = image.section(".erix_image")
    if note is None or len(note) < IMAGE_NOTE.size:
        return None
    fields = IMAGE_NOTE.unpack(note)
    if fields["magic"] != IMAGE_NOTE_MAGIC or fields["version"] != IMAGE_NOTE_VERSION:
        return None
    return fields


def image_role(image: ElfImage) -> Role | None:
    """The role an image declares in its .erix_image section, if it has a valid one."""
    fields = image_note(image)
    if fields is None:
        return None
    try:
        return Role(fields["role"])
    except ValueError:
        return None


def brings_own_stack(image: ElfImage) -> bool:
    """An EriX image (one with a valid image note) sets up its own stack (docs/abi.md §9)."""
    return image_note(image) is not None
