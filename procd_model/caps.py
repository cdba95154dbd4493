"""Capabilities and per-process capability tables.

Every syscall that names a slot goes through `CapTable.lookup`, which enforces slot range,
presence, type and rights in that order and answers with the ABI status for the first failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from procd_model.abi import CAP_TABLE_SLOTS, CapType, Rights, Status


@dataclass(frozen=True)
class Capability:
    cap_type: CapType
    obj: int
    """Id of the kernel object (endpoint or notification); 0 for kernel-control."""
    rights: Rights
    badge: int = 0

    def derive(self, rights: Rights) -> Capability | None:
        """A copy with `rights`, or None if that would widen this capability's rights."""
        if int(rights) & ~int(self.rights):
            return None
        return Capability(self.cap_type, self.obj, Rights(rights), self.badge)


class CapLookupError(Exception):
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class CapTable:
    """CAP_TABLE_SLOTS slots; slot 0 is always empty. Held as a dict of the occupied slots (a
    process holds a handful of its 64: a long run keeps every dead process's table)."""

    def __init__(self) -> None:
        self._slots: dict[int, Capability] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CapTable) and self._slots == other._slots

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> CapTable:
        """A table holding the same capabilities (they are immutable), changed independently."""
        table = CapTable()
        table._slots = dict(self._slots)
        return table

    def get(self, slot: int) -> Capability | None:
        return self._slots.get(slot)

    def lookup(self, slot: int, cap_types: tuple[CapType, ...], right: Rights) -> Capability:
        """The capability in `slot` if it has one of `cap_types` and `right`; else CapLookupError."""
        if not 0 <= slot < CAP_TABLE_SLOTS:
            raise CapLookupError(Status.INVALID_ARGUMENT, f"slot {slot} out of range")
        cap = self._slots.get(slot)
        if cap is None:
            raise CapLookupError(Status.NOT_FOUND, f"slot {slot} is empty")
        if cap.cap_type not in cap_types:
            raise CapLookupError(Status.INVALID_ARGUMENT, f"slot {slot} holds {cap.cap_type.name}")
        if right and not int(cap.rights) & int(right):
            raise CapLookupError(Status.DENIED, f"slot {slot} lacks {right.name}")
        return cap

    def install(self, cap: Capability, slot: int | None = None) -> int | None:
        """Put `cap` in `slot` (or the first free slot); the slot used, or None if full."""
        if slot is None:
            for candidate in range(1, CAP_TABLE_SLOTS):
                if candidate not in self._slots:
                    slot = candidate
                    break
            else:
                return None
        if not 1 <= slot < CAP_TABLE_SLOTS or slot in self._slots:
            return None
        self._slots[slot] = cap
        return slot

    def delete(self, slot: int) -> None:
        self._slots.pop(slot, None)

    def occupied(self) -> list[tuple[int, Capability]]:
        return sorted(self._slots.items())
