"""How a model becomes bytes and back: skops (safe, default) or pickle (explicitly trusted).

Each flavor turns an estimator into an artifact and an artifact back into an estimator.
Loading never runs before the caller has verified the artifact's sha256.
"""

from __future__ import annotations

import io
from typing import Any, Literal

from serving.errors import UntrustedArtifact

# skops and joblib are imported where used: importing skops imports all of scikit-learn
# (about a second), which commands that never load a model should not pay.

Flavor = Literal["sklearn-skops", "sklearn-pickle"]
EXTENSIONS: dict[Flavor, str] = {"sklearn-skops": "skops", "sklearn-pickle": "joblib"}
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def flavor_of_file(filename: str) -> Flavor:
    if filename.endswith(".skops"):
        return "sklearn-skops"
    if filename.endswith(_PICKLE_SUFFIXES):
        return "sklearn-pickle"
    raise UntrustedArtifact(
        filename, "only .skops, .joblib, .pkl and .pickle artifacts can be registered"
    )


def dump(model: Any, flavor: Flavor) -> bytes:
    if flavor == "sklearn-skops":
        import skops.io as sio

        return bytes(sio.dumps(model))
    import joblib

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def untrusted_types(data: bytes) -> list[str]:
    """Types in a skops artifact that skops does not trust by default."""
    import skops.io as sio

    return sorted(sio.get_untrusted_types(data=data))


def check_trusted(what: str, data: bytes, flavor: Flavor, trusted: list[str], trust_pickle: bool):
    """Raise :class:`UntrustedArtifact` unless loading ``data`` was explicitly allowed."""
    if flavor == "sklearn-pickle":
        if not trust_pickle:
            raise UntrustedArtifact(
                what,
                "pickle runs arbitrary code when loaded; register it with --trust-pickle "
                "(trust_pickle=True) only if you trust its author",
            )
        return
    missing = sorted(set(untrusted_types(data)) - set(trusted))
    if missing:
        raise UntrustedArtifact(
            what,
            f"it contains types that are not trusted: {', '.join(missing)}; "
            "trust them explicitly with --trust-type (trusted_types=[...])",
        )


def load(data: bytes, flavor: Flavor, trusted: list[str], trust_pickle: bool, what: str) -> Any:
    """The estimator in ``data``; refuses anything not explicitly trusted."""
    check_trusted(what, data, flavor, trusted, trust_pickle)
    if flavor == "sklearn-pickle":
        import joblib

        return joblib.load(io.BytesIO(data))
    import skops.io as sio

    return sio.loads(data, trusted=trusted)
