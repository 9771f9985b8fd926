"""What model references resolved to, as a registry remembers it between store reads.

An answer is reused for ``alias_ttl_s``. While the store cannot be reached, the last answer
the store gave is served for up to ``stale_resolution_s`` after it gave it (a loaded model
keeps answering through a store outage), and the store is tried again at most every
``alias_ttl_s`` (at least every second) meanwhile; past that bound the reference fails
with the store's own error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from serving.settings import RegistrySettings

Key = tuple[str, int]
_RETRY_FLOOR_S = 1.0  # a store that refuses at once must not be asked on every request


@dataclass(slots=True)
class Resolution:
    answer: Key
    confirmed: float
    """``time.monotonic()`` when the store last gave this answer."""
    failed: float | None = None
    """When the last try to confirm it found the store away (``None``: it has not)."""


class Resolutions:
    """References and their answers; plain dict operations, safe from any thread."""

    def __init__(self, settings: RegistrySettings):
        self.settings = settings
        self._known: dict[str, Resolution] = {}

    def fresh(self, ref: str) -> Key | None:
        """The answer to use without asking the store, if there is one: given by the store
        within ``alias_ttl_s``, or, while the store is away, served stale until the next try."""
        known = self._known.get(ref)
        if known is None:
            return None
        now = time.monotonic()
        ttl = self.settings.alias_ttl_s
        if known.failed is None:
            return known.answer if now - known.confirmed < ttl else None
        if now - known.failed < max(ttl, _RETRY_FLOOR_S) and self._within_bound(known, now):
            return known.answer
        return None

    def confirmed(self, ref: str, answer: Key) -> None:
        """The store gave ``answer`` for ``ref`` just now."""
        self._known[ref] = Resolution(answer, time.monotonic())

    def fallback(self, ref: str) -> Key | None:
        """The store could not be asked: the last answer, while it is within the bound
        (it is then served stale), else ``None``."""
        known = self._known.get(ref)
        now = time.monotonic()
        if known is None or not self._within_bound(known, now):
            return None
        known.failed = now
        return known.answer

    def staleness(self, ref: str) -> float | None:
        """Seconds since the store last confirmed ``ref``'s answer, when it is served stale
        (the store was away at the last try); ``None`` otherwise."""
        known = self._known.get(ref)
        if known is None or known.failed is None:
            return None
        return time.monotonic() - known.confirmed

    def servable(self) -> dict[str, tuple[Key, float]]:
        """Every reference whose last answer may be served without the store, with its age."""
        now = time.monotonic()
        return {
            ref: (known.answer, now - known.confirmed)
            for ref, known in list(self._known.items())
            if self._within_bound(known, now)
        }

    def clear(self) -> None:
        """Forget every answer (this process moved an alias or added a version)."""
        self._known.clear()

    def _within_bound(self, known: Resolution, now: float) -> bool:
        return now - known.confirmed <= self.settings.stale_resolution_s
