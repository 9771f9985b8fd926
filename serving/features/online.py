"""The same window features for real-time requests: a model served with a features file
(``MMSERVE_MODELS='{"fraud": {"features": "features.yaml"}}'``) gets them computed for each
request row from the stream's state in Redis as of now, without adding the row, so a
payment scored over HTTP and the same payment scored from the stream see one history.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from serving.errors import MMServeError, UnsupportedOperation
from serving.features import spec as specs
from serving.features import state, windows
from serving.settings import Settings


class OnlineFeatures:
    """A features file's features over the state on ``client``'s Redis (``url`` names it
    in errors)."""

    def __init__(self, spec: specs.FeatureSpec, client: Any, url: str):
        self.spec = spec
        self.client = client
        self.url = url

    def table(self, rows: pa.Table, inputs: Sequence[str]) -> pa.Table:
        """``rows`` with their features as columns, computed as of now (a row's time field,
        if it gives one); the fields only the features read (key, time, aggregated) that
        are not among the model's ``inputs`` are dropped. A row without a key, or with a
        field that does not read, is refused naming the field (422)."""
        spec = self.spec
        read = {*spec.by_key(), *(f.field for f in spec.features.values() if f.field)}
        if spec.time.field is not None:
            read.add(spec.time.field)
        # Only the fields the features read become Python objects: not a row's image.
        records = rows.select([c for c in rows.column_names if c in read]).to_pylist()
        before = state.read(self.client, spec, windows.groups(spec, records), self.url)
        now_ms = round(time.time() * 1000)
        events = [(windows.LAST, r) for r in records]
        computed = windows.compute(spec, before, events, now_ms)
        if computed.bad:
            row, errors = min(computed.bad.items())
            raise _at_row(errors[0], row)
        for name, feature in spec.features.items():
            counted = feature.agg in ("count", "count_distinct")
            values = pa.array(computed.columns[name], pa.int64() if counted else pa.float64())
            if name in rows.column_names:
                rows = rows.drop_columns([name])
            rows = rows.append_column(name, values)
        dropped = [c for c in rows.column_names if c in read and c not in inputs]
        return rows.drop_columns(dropped)


def _at_row(error: MMServeError, row: int) -> MMServeError:
    error.message = f"{error.message} at row {row}"
    return error


def served(settings: Settings) -> dict[Path, OnlineFeatures]:
    """The online features of each features file the models are served with (the default
    policy's and each model's), read now: a file missing or refused, or no Redis for the
    state, raises naming the file and the reason, so that the server does not start rather
    than answer each request of the model with a 400 that blames its caller."""
    policies = [settings.serving, *(settings.serving_of(name) for name in settings.models)]
    paths = dict.fromkeys(p.features for p in policies if p.features is not None)
    return {path: open_features(path, settings.redis) for path in paths}


def open_features(path: Path, redis_url: str | None) -> OnlineFeatures:
    """The online features of the features file ``path`` on ``redis_url``."""
    if redis_url is None:
        why = "MMSERVE_REDIS_URL (or MMSERVE_BROKER_URL) is not set: the state is in Redis"
        raise UnsupportedOperation(f"window features of {path}", why)
    import redis

    client = redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )  # Redis away: a 503 within seconds, well inside the request's timeout
    return OnlineFeatures(specs.load(path), client, redis_url)
