"""Model references that name a chain, and what scores them, for every mode.

Wherever a mode takes a model reference it takes a chain too: the steps' references joined
by commas, ``fraud-prep:1,fraud@production`` (a comma is never part of a model name or an
alias, so the two cannot be confused). A chain is scored as a
:class:`~serving.endpoints.pipeline.Pipeline`, each step's outputs feeding the next. The
modes go through two functions:

- :func:`pin`: the reference with each step's version as it resolves now
  (``fraud-prep:1,fraud:7``), what a job, a batch run or a pinned stream records;
- :func:`load`: the :class:`~serving.predictor.Scorer` of a reference: the registry's own
  :class:`~serving.predictor.Predictor` for one model (one ``in`` test more than
  ``Registry.load``), a ``Pipeline`` of the steps' predictors for a chain.

An error about a step (not registered, no such version or alias, a reference that does not
parse) is that step's own error, so it names the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from serving.endpoints.pipeline import Pipeline
from serving.errors import InvalidReference
from serving.predictor import Predictor, Scorer
from serving.registry import Registry

SEPARATOR = ","
"""Between the steps of a chain reference."""


def steps(ref: str) -> list[str]:
    """The step references of ``ref``, in order (one for a single model). Spaces around a
    step are dropped (``prep, fraud`` is ``prep,fraud``); an empty step is refused."""
    if SEPARATOR not in ref:
        return [ref]
    parts = [part.strip() for part in ref.split(SEPARATOR)]
    if not all(parts):
        raise InvalidReference(ref)
    return parts


def join(refs: Sequence[str]) -> str:
    """The chain reference of ``refs`` applied in order (``refs[0]`` alone if it is one)."""
    return SEPARATOR.join(refs)


def pin(registry: Registry, ref: str) -> str:
    """``ref`` with every step's version fixed as it resolves now: ``prep@production,fraud``
    becomes ``prep:1,fraud:7``, a single model ``fraud:7``. Raises the error of the first
    step that does not resolve."""
    return join([_pinned(registry, step) for step in steps(ref)])


def load(registry: Registry, ref: str) -> Scorer:
    """What scores ``ref``: the predictor of a single model, or the pipeline of a chain's
    steps (each loaded, cached and integrity-checked by ``registry``)."""
    return assemble(ref, registry.load)


def assemble(ref: str, load_step: Callable[[str], Predictor]) -> Scorer:
    """What scores ``ref``, each step's predictor given by ``load_step`` (a registry's
    ``load``, or a worker's own cache of them)."""
    if SEPARATOR not in ref:
        return load_step(ref)  # one model: no pipeline around it, nothing to pay for
    return Pipeline([load_step(step) for step in steps(ref)])


def labels(pinned: str) -> tuple[str, str]:
    """A pinned reference as a name and a version field, step by step: ``("fraud", "7")``
    for ``fraud:7``, ``("fraud-prep,fraud", "1,7")`` for ``fraud-prep:1,fraud:7`` (how a
    stream's outputs and metrics say which model answered)."""
    pairs = [step.rsplit(":", 1) for step in steps(pinned)]
    if any(len(pair) != 2 for pair in pairs):
        raise InvalidReference(pinned)
    return join([name for name, _ in pairs]), join([version for _, version in pairs])


def _pinned(registry: Registry, step: str) -> str:
    name, version = registry.resolve(step)
    return f"{name}:{version}"
