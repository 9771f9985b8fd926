"""Window features for the tests: a generated stream of card transactions (bursts,
out-of-order and too-late events) and a reference of their features computed offline with
pandas, over the whole stream in its order, independently of ``serving.features``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from serving.features.spec import FeatureSpec

SPEC_YAML = """
features:
  card_txn_count_60s: {key: card_id, agg: count, window: 60s}
  card_amount_sum_10m: {key: card_id, field: amount, agg: sum, window: 10m}
  card_amount_max_60s: {key: card_id, field: amount, agg: max, window: 60s}
  account_distinct_payees_5m: {key: account_id, field: payee, agg: count_distinct, window: 5m}
time: {field: ts, allowed_lateness: 30s}
"""
START_S = 1_765_000_000.0


def transactions(n: int, seed: int = 0, cards: int = 12) -> list[dict[str, str]]:
    """``n`` card payments in stream order: ~0.1 s apart on average, with bursts (a card
    paying many times within seconds), events up to 20 s out of order, and one in ~60
    minutes behind (too late for a 30 s lateness). Times in seconds, to the ms."""
    rng = np.random.default_rng(seed)
    clock = START_S
    events: list[dict[str, str]] = []
    burst_card, burst_left = 0, 0
    for i in range(n):
        clock += float(rng.exponential(0.1))
        if burst_left == 0 and rng.random() < 0.01:
            burst_card, burst_left = int(rng.integers(cards)), int(rng.integers(5, 30))
        if burst_left:
            card, burst_left = burst_card, burst_left - 1
        else:
            card = int(rng.integers(cards))
        ts = clock
        if rng.random() < 0.1:
            ts -= float(rng.uniform(0, 20))  # out of order, within the lateness
        if rng.random() < 1 / 60:
            ts -= float(rng.uniform(40, 3600))  # too late
        events.append(
            {
                "txn_id": f"t{i}",
                "card_id": f"c{card}",
                "account_id": f"a{card % 5}",
                "payee": f"p{int(rng.integers(40))}",
                "amount": f"{int(rng.integers(100, 50_000)) / 100:.2f}",
                "ts": f"{ts:.3f}",
            }
        )
    return events


def reference(spec: FeatureSpec, events: list[dict[str, str]]) -> pd.DataFrame:
    """Each event's features (and whether it was late), computed over the events in order:
    a frame indexed like ``events``. Written apart from ``serving.features.windows``, from
    the rules in its docstring."""
    frame = pd.DataFrame(events)
    frame["time_ms"] = (frame["ts"].astype(float) * 1000).round().astype(np.int64)
    lateness = spec.time.allowed_lateness
    marks: dict[tuple[str, str], int] = {}
    late = np.zeros(len(frame), dtype=bool)
    keys = list(spec.by_key())
    for i, row in enumerate(frame[["time_ms", *keys]].itertuples(index=False)):
        t, values = row[0], row[1:]
        late[i] = any(
            t < marks[(k, v)] - lateness
            for k, v in zip(keys, values, strict=True)
            if (k, v) in marks
        )
        if not late[i]:
            for k, v in zip(keys, values, strict=True):
                marks[(k, v)] = max(marks.get((k, v), t), t)
    frame["late"] = late
    out = pd.DataFrame(index=frame.index)
    out["late"] = late
    for name, feature in spec.features.items():
        out[name] = np.nan
        horizon = spec.horizon(feature.key)
        for _, group in frame.groupby(feature.key, sort=False):
            times = group["time_ms"].to_numpy()
            added = ~group["late"].to_numpy()
            column = group[feature.field] if feature.field else None
            values: np.ndarray | None = None
            if column is not None:
                numeric = feature.agg in ("sum", "mean", "min", "max")
                values = column.astype(float).to_numpy() if numeric else column.to_numpy()
            results = []
            for j in range(len(group)):
                prior = np.zeros(len(group), dtype=bool)
                prior[:j] = added[:j]
                mark = times[prior].max() if prior.any() else times[j]
                low = max(times[j] - feature.window, mark - horizon)
                inside = prior & (times > low) & (times <= times[j])
                if feature.agg == "count":
                    results.append(int(inside.sum()) + 1)
                    continue
                assert values is not None
                window = [*values[inside], values[j]]
                if feature.agg == "count_distinct":
                    results.append(len(set(window)))
                elif feature.agg == "sum":
                    results.append(math.fsum(window))
                elif feature.agg == "mean":
                    results.append(math.fsum(window) / len(window))
                else:
                    results.append(min(window) if feature.agg == "min" else max(window))
            out.loc[group.index, name] = results
    return out


def echo_model(folder: Path, spec: FeatureSpec) -> Path:
    """A ``python`` model (register with ``trust_code``) whose inputs are ``spec``'s features
    (counts as int64, the others double) and whose outputs are the same values, each named
    ``seen_<feature>``: what the model saw, read back from the sink."""
    inputs = "\n".join(f'{name} = "{_type(spec, name)}"' for name in spec.features)
    outputs = "\n".join(f'seen_{name} = "{_type(spec, name)}"' for name in spec.features)
    manifest = f'model = "echo:Echo"\n\n[inputs]\n{inputs}\n\n[outputs]\n{outputs}\n'
    code = (
        "class Echo:\n"
        "    def load(self, path):\n"
        "        pass\n\n"
        "    def predict(self, table):\n"
        '        return {f"seen_{n}": table[n].to_numpy() for n in table.column_names}\n'
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mmserve.toml").write_text(manifest)
    (folder / "echo.py").write_text(code)
    return folder


def _type(spec: FeatureSpec, name: str) -> str:
    return "int64" if spec.features[name].agg in ("count", "count_distinct") else "double"


def seen(outputs: list[dict[str, str]], spec: FeatureSpec) -> pd.DataFrame:
    """The features each output's model saw, as numbers, one row per output."""
    return pd.DataFrame(
        {name: [float(o[f"seen_{name}"]) for o in outputs] for name in spec.features}
    )
