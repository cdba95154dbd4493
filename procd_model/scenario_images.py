"""ELF files a scenario names by path (`image = "build/my-client.elf"`), relative to the scenario file.

A value of a scenario's `image` key that contains a `/` or ends in `.elf` names a file; any other
value names a boot image. Each file is read and validated once, when the scenario is loaded (so a
missing file, a file that is not an ELF, or an image that overlaps a kernel-owned page is reported
before anything runs, naming the scenario file and the key), and gets an image id of its own from
USER_IMAGE_BASE on, in the order the scenario first names it. Its name (in the trace, and for
`[[inject]]`) is the path as first written, normalised (`./a/../b.elf` is `b.elf`); another spelling
of the same file is the same image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emu.elf import ElfError, ElfImage, load_elf
from procd_model.kernel.lifecycle import check_layout
from procd_model.kernel.outcome import ImageLayoutError
from procd_model.schema import SchemaError, echo

USER_IMAGE_BASE = 0x1000
"""The first image id a scenario's own ELF files get (the boot images have small ids)."""


def names_a_file(value: str) -> bool:
    """Whether an `image` value is a path to an ELF file rather than a boot image name."""
    return "/" in value or value.endswith(".elf")


@dataclass(frozen=True)
class UserImage:
    """A scenario's own ELF file, loaded: CREATE_PROCESS for `image_id` starts it."""

    image_id: int
    name: str
    image: ElfImage
    path: Path
    """The file it was read from (resolved)."""


class ImageFiles:
    """The ELF files one scenario file names, resolved against its folder."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._by_file: dict[Path, UserImage] = {}

    @property
    def images(self) -> tuple[UserImage, ...]:
        return tuple(self._by_file.values())

    def resolve(self, key: str, written: str) -> str:
        """The image name for the file `written` names (loaded the first time); SchemaError if unusable."""
        if self._folder is None:
            raise SchemaError(key, f"{echo(written)} names a file, but this scenario has no folder to find it in")
        path = self._folder / written
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a loop of links, too long, a NUL byte
            raise SchemaError(key, f"{echo(written)}: no such file (looked for {path})") from None
        known = self._by_file.get(real)
        if known is not None:
            return known.name
        name = os.path.normpath(written)
        if not names_a_file(name):  # `d/../procd` must not take a boot image's name
            name = written
        try:
            image = load_elf(real, name=name)
            check_layout(image)
        except (ElfError, ImageLayoutError) as exc:
            problem = str(exc).removeprefix(f"{name}: ")
            raise SchemaError(key, f"{echo(written)}: {problem}") from None
        self._by_file[real] = UserImage(USER_IMAGE_BASE + len(self._by_file), name, image, real)
        return name
