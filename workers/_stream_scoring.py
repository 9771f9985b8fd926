"""The model side of a stream consumer: which version scores, and one call per batch that
sets aside the events it cannot score instead of failing them all."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa

from serving import scorers
from serving.errors import InputError, MMServeError, ModelError, NullValue
from serving.predictor import Scorer
from serving.registry import Registry

log = logging.getLogger("mmserve.stream")


class LiveModel:
    """The model (or chain of models, ``prep,fraud@production``) a consumer scores with.
    Following (the default), it is the version ``ref`` names now, step by step: an alias
    move is picked up between batches (within the registry's ``alias_ttl_s``), as an
    endpoint follows its new model. Pinned, it is the version each step named at start."""

    def __init__(self, registry: Registry, ref: str, follow: bool = True):
        self.registry = registry
        self.ref = ref if follow else scorers.pin(registry, ref)
        self.scorer = scorers.load(registry, self.ref)
        self._follow = follow
        self._failure: str | None = None

    def current(self) -> Scorer:
        if not self._follow:
            return self.scorer
        try:
            scorer = scorers.load(self.registry, self.ref)
        except MMServeError as err:  # the store away, a new version that fails its checks
            if err.message != self._failure:
                log.error("%s: scoring with %s meanwhile", err.message, self.scorer.ref)
            self._failure = err.message
            return self.scorer
        self._failure = None
        if scorer.ref != self.scorer.ref:
            log.info("%s is now %s (was %s)", self.ref, scorer.ref, self.scorer.ref)
        self.scorer = scorer
        return scorer


@dataclass(frozen=True, slots=True)
class Scored:
    """A batch's answers, and the rows that have none."""

    table: pa.Table
    rows: list[int]
    """The input row of each row of ``table``."""
    failed: list[tuple[int, MMServeError]]
    """Input rows the model could not score: an :class:`InputError` (the row does not fit
    the schema) or a :class:`ModelError` (the model raised on it)."""


def score(scorer: Scorer, table: pa.Table) -> Scored:
    """Score ``table`` in one call (rows that do not fit the schema, of any step of a chain,
    are set aside by ``predict_valid``); if a model itself fails, halve, so that the rows it
    fails on stand alone and the others are scored."""
    try:
        scored, bad = scorer.predict_valid(table)
    except ModelError as err:
        if table.num_rows <= 1:
            return Scored(scorer.predict(table.slice(0, 0)), [], [(0, err)])
        half = table.num_rows // 2
        left, right = score(scorer, table.slice(0, half)), score(scorer, table.slice(half))
        return Scored(
            pa.concat_tables([left.table, right.table]),
            left.rows + [row + half for row in right.rows],
            left.failed + [(row + half, e) for row, e in right.failed],
        )
    if not bad:
        return Scored(scored, list(range(table.num_rows)), [])
    failed = {row: _input_error(scorer, table.slice(row, 1), reason) for row, reason in bad}
    rows = [row for row in range(table.num_rows) if row not in failed]
    return Scored(scored, rows, list(failed.items()))


def _input_error(scorer: Scorer, row: pa.Table, reason: str) -> MMServeError:
    """The typed error of a row ``predict_valid`` set aside (it gives the reason only)."""
    try:
        scorer.predict(row)
    except InputError as err:
        if isinstance(err, NullValue):  # "at row 0" of a one-row table: no news to anyone
            err.message = err.message.removesuffix(f" at row {err.row}")
        return err
    return InputError(reason)
