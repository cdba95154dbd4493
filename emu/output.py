"""Where an output file goes, decided before the run, and writing it without harming what was there.

`resolve_target` looks at a path as the user gave it and decides, before anything runs:

- `-`: standard output.
- A descriptor alias (`/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`, a process substitution):
  written to that open descriptor, never replaced.
- A regular file, new or existing, also through symbolic links: written atomically. The bytes go
  to a temporary file in the folder of the link's final target, are synced, and the temporary
  file is renamed over that target when the output is committed; an existing file keeps its mode.
- A FIFO or a character device (`/dev/null`, a terminal): opened and streamed to, never replaced.
- Refused with `OutputError`: a directory, a block device, a socket, anything else under /proc or
  /sys, a missing or unwritable folder, an existing file that is not writable, a descriptor not
  open for writing, and any of the run's input files (compared by device and inode, so symbolic
  and hard links count too).

`check_distinct` refuses two outputs that are the same file (only the null device may be shared).
`Outputs.open` creates the temporary file (or opens the stream); leaving the `Outputs` block
aborts what was not committed, which removes the temporary file, so no exit leaves one behind.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from emu.interrupt import deferred

STDOUT = "-"
_MAX_LINKS = 40
_FD_FOLDER = re.compile(r"/proc/(?P<pid>\d+)(?:/task/\d+)?/fd")
_PSEUDO_FILESYSTEMS = ("/proc", "/sys")
_NULL_DEVICE = os.stat(os.devnull).st_rdev
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TEMP_NAME_PART = 64
"""How much of the target's name the temporary file's name repeats (names are at most 255 bytes)."""


class OutputError(Exception):
    """An output path that cannot be used: one line naming the option and the path."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class TargetKind(Enum):
    STDOUT = "stdout"
    DESCRIPTOR = "descriptor"
    FILE = "file"
    """A regular file, written atomically."""
    STREAM = "stream"
    """A FIFO or character device, opened and written in place."""


Identity = tuple[int, int] | str
"""(device, inode) of an existing file, or the resolved path of a file still to be created."""


@dataclass(frozen=True)
class Target:
    label: str
    """The option and the path as given, for messages: "--out trace.jsonl"."""
    kind: TargetKind
    path: Path | None = None
    """FILE: the resolved path to write; STREAM: the path to open."""
    fd: int | None = None
    """DESCRIPTOR: the descriptor to write to."""
    identity: Identity | None = None
    shareable: bool = False
    """Several outputs may name it (the null device)."""

    @property
    def is_stdout(self) -> bool:
        """Whether the bytes end up on this process's standard output."""
        return self.kind is TargetKind.STDOUT or (self.kind is TargetKind.DESCRIPTOR and self.fd == 1)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _is_null(status: os.stat_result) -> bool:
    return stat.S_ISCHR(status.st_mode) and status.st_rdev == _NULL_DEVICE


def _follow(path: str) -> tuple[str, int | None]:
    """`path` with every symbolic link followed, and the descriptor it names if it ends in a
    /proc/<this process>/fd/N entry (those entries are links to pipes, terminals and files that
    must be written through the descriptor, not replaced)."""
    current = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    for _ in range(_MAX_LINKS):
        parent, name = os.path.split(current)
        if name in ("", ".", ".."):
            return os.path.realpath(current), None
        parent = os.path.realpath(parent)
        folder = _FD_FOLDER.fullmatch(parent)
        if folder is not None and name.isdigit():
            if int(folder["pid"]) == os.getpid():
                return os.path.join(parent, name), int(name)
            return os.path.join(parent, name), None
        current = os.path.join(parent, name)
        if not os.path.islink(current):
            return current, None
        current = os.path.join(parent, os.readlink(current))
    raise OSError(f"more than {_MAX_LINKS} symbolic links")


def _one_line(text: str) -> str:
    """`text` with control characters (a newline in a path) escaped as in Python literals."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _under(path: str, folders: Iterable[str]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


def input_identities(paths: Iterable[Path | str]) -> dict[tuple[int, int], str]:
    """(device, inode) -> path of each existing input file, for `resolve_target`."""
    found: dict[tuple[int, int], str] = {}
    for path in paths:
        try:
            found.setdefault(_identity(os.stat(path)), str(path))
        except OSError:
            continue  # an input that does not exist cannot be overwritten; its reader reports it
    return found


def resolve_target(
    option: str, given: str, inputs: dict[tuple[int, int], str] | None = None, *, label: str | None = None
) -> Target:
    """Decide where `option`'s output `given` goes, or raise `OutputError` (see the module doc).

    `inputs` are files the run reads (`input_identities`); `label` names the output in messages
    (default: the option and the path as given).
    """
    if label is None:
        label = f"{option} {given}"

    def refuse(reason: str) -> OutputError:
        return OutputError(f"{label}: {reason}")

    def check_not_input(identity: tuple[int, int]) -> None:
        if inputs and identity in inputs:
            raise refuse(f"is the input file {inputs[identity]}, refusing to overwrite it")

    if given == STDOUT:
        target = _descriptor_target(label, 1, refuse, check_not_input)
        return dataclasses.replace(target, kind=TargetKind.STDOUT, fd=None)
    if not given:
        raise refuse("empty path")
    if given.endswith("/"):
        raise refuse("names a folder, not a file")
    try:
        resolved, fd = _follow(given)
    except OSError as exc:
        raise refuse(f"cannot resolve: {exc.strerror or exc}") from None
    if fd is not None:
        return _descriptor_target(label, fd, refuse, check_not_input)
    if _under(resolved, _PSEUDO_FILESYSTEMS):
        raise refuse(f"{resolved} is under {' or '.join(_PSEUDO_FILESYSTEMS)}, refusing to write there")
    status: os.stat_result | None
    try:
        status = os.stat(resolved)
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    folder = os.path.dirname(resolved)
    if status is None:
        _check_folder(folder, refuse)
        return Target(label, TargetKind.FILE, Path(resolved), identity=resolved)
    check_not_input(_identity(status))
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise refuse("is a directory")
    if stat.S_ISREG(mode):
        _check_folder(folder, refuse)
        if not os.access(resolved, os.W_OK):
            raise refuse("file is not writable")
        return Target(label, TargetKind.FILE, Path(resolved), identity=_identity(status))
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return Target(label, TargetKind.STREAM, Path(resolved), identity=_identity(status), shareable=_is_null(status))
    kind = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
    raise refuse(f"is {kind}, refusing to write to it")


def _descriptor_target(
    label: str, fd: int, refuse: Callable[[str], OutputError], check_not_input: Callable[[tuple[int, int]], None]
) -> Target:
    try:
        status = os.fstat(fd)
    except OSError:
        raise refuse(f"descriptor {fd} is not open") from None
    check_not_input(_identity(status))
    if stat.S_ISDIR(status.st_mode):
        raise refuse("is a directory")
    if not _writable_descriptor(fd):
        raise refuse(f"descriptor {fd} is not open for writing")
    return Target(label, TargetKind.DESCRIPTOR, fd=fd, identity=_identity(status), shareable=_is_null(status))


def _writable_descriptor(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not a POSIX system: the first write reports it
        return True
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def _check_folder(folder: str, refuse: Callable[[str], OutputError]) -> None:
    if not os.path.isdir(folder):
        raise refuse(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise refuse(f"folder {folder} is not writable")


def check_distinct(targets: Sequence[Target]) -> None:
    """Refuse two outputs that would write the same file (the null device excepted)."""
    seen: dict[Identity, Target] = {}
    for target in targets:
        if target.shareable or target.identity is None:
            continue
        earlier = seen.setdefault(target.identity, target)
        if earlier is not target:
            raise OutputError(f"{target.label}: same file as {earlier.label}")


class Output:
    """One output. `open()` it, write to `stream`, then `commit()` (a file appears whole) or
    `abort()` (no temporary file stays). Both are idempotent; `abort()` before `open()` and
    `commit()` after `abort()` do nothing."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.stream: BinaryIO = sys.stdout.buffer
        self._tmp: str | None = None
        self._opened = False
        self._done = False

    def open(self) -> None:
        target = self.target
        if target.kind is TargetKind.DESCRIPTOR:
            assert target.fd is not None
            self.stream = _open_fd(os.dup(target.fd), target)
        elif target.kind is TargetKind.STREAM:
            self.stream = _open_fd(_open_path(target), target)  # a FIFO waits here for its reader
        elif target.kind is TargetKind.FILE:
            self._open_temporary()
        self._opened = True

    def _open_temporary(self) -> None:
        path = self.target.path
        assert path is not None
        try:
            self._mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            self._mode = 0o666 & ~_umask()
        with deferred():  # the temporary file's name is recorded before a signal can unwind
            try:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f".{path.name[:_TEMP_NAME_PART]}.", suffix=".tmp", dir=path.parent
                )
            except OSError as exc:
                raise OutputError(
                    f"{self.target.label}: cannot create a file in {path.parent}: {exc.strerror}"
                ) from None
            self.stream = os.fdopen(fd, "wb")

    def commit(self) -> None:
        if self._done or not self._opened:
            return
        self._done = True
        if self.target.kind is TargetKind.STDOUT:
            self.stream.flush()
            return
        with deferred():
            try:
                self.stream.flush()
                if self._tmp is not None:
                    os.fsync(self.stream.fileno())
                self.stream.close()
                if self._tmp is not None:
                    os.chmod(self._tmp, self._mode)  # mkstemp creates 0600
                if self._tmp is not None:
                    assert self.target.path is not None
                    os.replace(self._tmp, self.target.path)
                    self._tmp = None
            except BaseException:
                self._discard()
                raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with deferred():
            self._discard()

    def _discard(self) -> None:
        if self._opened and self.target.kind is not TargetKind.STDOUT:
            with suppress(OSError):  # e.g. a full disk on the last flush: the temporary file goes anyway
                self.stream.close()
        if self._tmp is not None:
            with suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


class Outputs:
    """The outputs of one run: opened before it, committed after it. Leaving the `with` block
    aborts every output not committed, however it is left (a signal included)."""

    def __init__(self) -> None:
        self._outputs: list[Output] = []

    def open(self, target: Target) -> Output:
        output = Output(target)
        self._outputs.append(output)  # before open(): an interrupted open is still aborted
        output.open()
        return output

    def __enter__(self) -> Outputs:
        return self

    def __exit__(
        self, _kind: type[BaseException] | None, _value: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        with deferred():
            for output in self._outputs:
                output.abort()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_fd(fd: int, target: Target) -> BinaryIO:
    try:
        return os.fdopen(fd, "wb")
    except OSError as exc:
        os.close(fd)
        raise OutputError(f"{target.label}: {exc.strerror or exc}") from None


def _open_path(target: Target) -> int:
    assert target.path is not None
    try:
        return os.open(target.path, os.O_WRONLY | _O_NOCTTY | _O_CLOEXEC)
    except OSError as exc:
        raise OutputError(f"{target.label}: cannot open: {exc.strerror or exc}") from None


def write_output(option: str, path: Path | str, data: bytes) -> None:
    """Resolve, open, write and commit in one step (for library callers of the exporters)."""
    with Outputs() as outputs:
        output = outputs.open(resolve_target(option, str(path)))
        output.stream.write(data)
        output.commit()


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` to a new file `folder/stem+suffix` (created with its parents if missing) and
    return its path; an existing file of that name is never replaced: the name gains `-2`, `-3`...

    As every output here, the file appears only complete: the bytes go to a temporary file in
    `folder`, are synced, and are hard-linked to the first free name (a link fails rather than
    replaces), then the temporary name goes. Raises OutputError.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    target = Target(f"{folder / (stem + suffix)}", TargetKind.FILE, folder / (stem + suffix))
    with Outputs() as outputs:
        output = outputs.open(target)
        output.stream.write(data)
        output.stream.flush()
        os.fsync(output.stream.fileno())
        tmp = output._tmp
        assert tmp is not None
        with deferred():
            os.chmod(tmp, 0o666 & ~_umask())
            for attempt in range(1, 10_000):
                name = folder / f"{stem}{'' if attempt == 1 else f'-{attempt}'}{suffix}"
                try:
                    os.link(tmp, name)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise OutputError(f"cannot write {name}: {exc.strerror or exc}") from None
                return name
    raise OutputError(f"{folder}: no free name for {stem}{suffix}")
