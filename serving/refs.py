"""Model references: ``churn`` (production alias, else newest), ``churn:3``, ``churn@staging``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from serving.errors import InvalidName, InvalidReference

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NAME_RULE = "use 1-64 characters: a-z, 0-9, '.', '_', '-', starting with a letter or digit"


def validate_name(value: str, kind: str = "model name") -> str:
    """Return ``value`` if it is a valid model name or alias, else raise :class:`InvalidName`."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise InvalidName(kind, value, _NAME_RULE)
    return value


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` may be set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        if not isinstance(ref, str) or not ref:
            raise InvalidReference(str(ref))
        if "@" in ref:
            name, alias = ref.split("@", 1)
            return cls(validate_name(name), alias=validate_name(alias, "alias"))
        if ":" in ref:
            name, version = ref.split(":", 1)
            if not version.isdigit() or int(version) < 1 or len(version) > 9:
                raise InvalidReference(ref)
            return cls(validate_name(name), version=int(version))
        return cls(validate_name(ref))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name
