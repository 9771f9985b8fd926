"""Window features without Redis: the features file's refusals, and the computation held
against an offline pandas reference over a generated stream, whatever its batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from serving.errors import InvalidFeatures
from serving.features import spec as specs
from serving.features import state, windows
from serving.features.windows import Group, Member, compute
from tests.windows import SPEC_YAML, reference, transactions

ISSUE_YAML = """
features:
  card_txn_count_60s: {key: card_id, agg: count, window: 60s}
  card_amount_sum_10m: {key: card_id, field: amount, agg: sum, window: 10m}
  account_distinct_payees_1h: {key: account_id, field: payee, agg: count_distinct, window: 1h}
time: {field: ts, allowed_lateness: 30s}
"""


def test_the_issues_features_file_reads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(ISSUE_YAML)
    spec = specs.load(path)
    assert spec.features["card_amount_sum_10m"] == specs.Feature(
        key="card_id", field="amount", agg="sum", window="10m"
    )
    assert spec.time == specs.Time(field="ts", allowed_lateness="30s")
    assert spec.by_key() == {
        "card_id": ["card_txn_count_60s", "card_amount_sum_10m"],
        "account_id": ["account_distinct_payees_1h"],
    }
    assert spec.horizon("card_id") == 630_000 and spec.fields("account_id") == ["payee"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "features: {s: {key: card_id, agg: sum, window: 10m}}",
            "features.s.field: agg 'sum' needs a field",
        ),
        (
            "features: {c: {key: card_id, agg: count, field: amount, window: 1m}}",
            "features.c.field: agg 'count' takes no field",
        ),
        (
            "features: {c: {key: card_id, agg: count, window: soon}}",
            "features.c.window: not a duration (such as 30s, 10m, 1h): 'soon'",
        ),
        (
            "features: {c: {key: card_id, agg: median, window: 1m}}",
            "features.c.agg: Input should be 'count', 'sum', 'mean', 'min', 'max' or "
            "'count_distinct'",
        ),
        (
            "features: {c: {key: card_id, agg: count, window: 1m, colour: red}}",
            "features.c.colour: unknown key",
        ),
        (
            "features: {c: {agg: count, window: 1m}}",
            "features.c.key: Field required",
        ),
        (
            "features: {c: {key: k, agg: count, window: 2d}}\ntime: {allowed_lateness: 1h}",
            "idle_ttl: 86400000 ms is shorter than the longest window plus the lateness "
            "(176400000 ms)",
        ),
        (
            "features: {c: {key: k, agg: count, window: 999999999999d}}",
            "features.c.window: Input should be less than or equal to 315360000000",
        ),
        (
            "features: {c: {key: 'card:id', agg: count, window: 1m}}",
            "features.c.key: a key field's name holds no ':' (the state's keys are split by it)",
        ),
        (
            "features: {c: {key: k, agg: count, window: 1m}}\ntime: {allowed_lateness: -1}",
            "time.allowed_lateness: Input should be greater than or equal to 0",
        ),
        (
            "features: {}",
            "features: Dictionary should have at least 1 item after validation, not 0",
        ),
        (
            "features: {1st: {key: k, agg: count, window: 1m}}",
            "features.1st: a feature's name is a letter or '_', then letters, digits or '_'",
        ),
    ],
)
def test_a_bad_features_file_is_refused_naming_the_feature_and_field(
    text: str, reason: str
) -> None:
    with pytest.raises(InvalidFeatures) as caught:
        specs.parse(text, "features.yaml")
    assert caught.value.message == f"features.yaml: {reason}"


def batched(
    spec: specs.FeatureSpec, events: list[dict[str, str]], sizes: Sequence[int]
) -> tuple[list[dict[str, float | int | None]], list[bool]]:
    """Every event's features and lateness, computed batch by batch (batches of ``sizes``,
    in turn), each batch given the state the earlier ones added."""
    state: dict[Group, list[Member]] = {}
    features: list[dict[str, float | int | None]] = []
    late: list[bool] = []
    start, turn = 0, 0
    while start < len(events):
        chunk = events[start : start + sizes[turn % len(sizes)]]
        batch = [(f"{start + k + 1}-0", e) for k, e in enumerate(chunk)]
        out = compute(spec, state, batch)
        assert not out.bad
        for k in range(len(chunk)):
            features.append({n: out.columns[n][k] for n in spec.features})
        late += out.late
        for added in out.added:
            for group, member in added:
                state.setdefault(group, []).append(member)
        start, turn = start + len(chunk), turn + 1
    return features, late


@pytest.mark.parametrize("sizes", [[1], [7, 256, 3], [5000]])
def test_features_equal_the_pandas_reference_whatever_the_batches(sizes: list[int]) -> None:
    more = (
        "  card_amount_mean_2m: {key: card_id, field: amount, agg: mean, window: 2m}\n"
        "  card_amount_min_5s: {key: card_id, field: amount, agg: min, window: 5s}\ntime:"
    )
    spec = specs.parse(SPEC_YAML.replace("time:", more))
    events = transactions(2000, seed=3)
    expected = reference(spec, events)
    features, late = batched(spec, events, sizes)
    assert late == expected["late"].tolist() and 15 < sum(late) < 100
    for name in spec.features:
        got = np.array([f[name] for f in features], dtype=float)
        np.testing.assert_array_equal(got, expected[name].to_numpy(), err_msg=name)


def test_an_event_sees_the_earlier_events_of_its_batch_and_a_late_one_adds_nothing() -> None:
    spec = specs.parse(
        "features:\n  n: {key: card, agg: count, window: 60s}\n"
        "  s: {key: card, field: amount, agg: sum, window: 60s}\n"
        "time: {field: ts, allowed_lateness: 10s}"
    )
    events = [
        {"card": "a", "amount": "1", "ts": "100"},
        {"card": "a", "amount": "2", "ts": "130"},
        {"card": "b", "amount": "4", "ts": "131"},
        {"card": "a", "amount": "8", "ts": "115"},  # 15 s behind a's 130: late
        {"card": "a", "amount": "16", "ts": "125"},  # 5 s behind: in time
        {"card": "a", "amount": "32", "ts": "170"},  # 100 has left the window
    ]
    out = compute(spec, {}, [(f"{k + 1}-0", e) for k, e in enumerate(events)])
    assert out.columns == {"n": [1, 2, 1, 2, 2, 3], "s": [1.0, 3.0, 4.0, 9.0, 17.0, 50.0]}
    assert out.late == [False, False, False, True, False, False]
    assert [len(a) for a in out.added] == [1, 1, 1, 0, 1, 1]


def test_an_event_without_its_key_time_or_a_number_is_bad_naming_the_field() -> None:
    spec = specs.parse(ISSUE_YAML)
    good = {"card_id": "c", "account_id": "a", "amount": "1.5", "payee": "p", "ts": "10"}
    events = [
        {k: v for k, v in good.items() if k != "card_id"},
        {**good, "amount": "lots"},
        {**good, "ts": "yesterday"},
        good,
    ]
    out = compute(spec, {}, [(f"{k + 1}-0", e) for k, e in enumerate(events)])
    assert {i: [e.message for e in errs] for i, errs in out.bad.items()} == {
        0: ["missing field 'card_id'"],
        1: ["field 'amount' is not a finite number: 'lots'"],
        2: [
            "field 'ts' is not a time from 1970 to 9999 (seconds since the epoch, or ISO 8601): "
            "'yesterday'"
        ],
    }
    assert out.columns["card_txn_count_60s"] == [None, None, None, 1]


def test_an_event_older_than_some_of_the_state_sees_only_the_members_before_it() -> None:
    """A batch claimed after later events were committed: each of its events sees the
    state's members of earlier entries only, their watermark too."""
    spec = specs.parse(
        "features:\n  n: {key: card, agg: count, window: 60s}\n"
        "  s: {key: card, field: amount, agg: sum, window: 60s}\n"
        "time: {field: ts, allowed_lateness: 10s}"
    )
    state = {
        ("card", "a"): [
            Member.of(100_000, "10-0", {"amount": 1.0}),
            Member.of(200_000, "30-0", {"amount": 4.0}),  # later in the stream
        ]
    }
    events = [
        (f"{k}-0", {"card": "a", "amount": "2", "ts": t})
        for k, t in ((20, "120"), (40, "120"), (50, "20"))
    ]
    out = compute(spec, state, events)
    assert out.columns == {"n": [2, 1, 1], "s": [3.0, 2.0, 2.0]}
    assert out.late == [False, True, True]  # 80 s, then 180 s behind 30-0's 200 s


def test_without_a_time_field_an_events_time_is_its_entry_ids() -> None:
    spec = specs.parse("features: {n: {key: card, agg: count, window: 10s}}")
    events = [(f"{ms}-0", {"card": "a"}) for ms in (1_000, 5_000, 12_000, 14_999)]
    assert compute(spec, {}, events).columns == {"n": [1, 2, 2, 3]}


def test_an_event_time_from_1970_to_9999_counts_and_any_other_is_bad_naming_the_field() -> None:
    """A time past 9999 (ms read as seconds, 1e300) or before 1970 would become its key's
    watermark, every later event late: it is refused; so is an int a float cannot hold."""
    spec = specs.parse(
        "features: {n: {key: card, agg: count, window: 10s}, "
        "s: {key: card, field: amount, agg: sum, window: 10s}}\ntime: {field: ts}"
    )
    times: list[object] = [
        "1765000000000",  # ms, read as seconds: the year 57,900
        "1e300",
        10**400,
        "-1",
        "nan",
        "0001-01-01T00:00:00Z",
        "1765000000.5",
        "2025-12-06T06:46:42+01:00",  # 1765000002 s
        "2025-12-06T05:46:45",  # no zone: UTC, 1765000005 s
    ]
    events = [(f"{k + 1}-0", {"card": "a", "amount": "1", "ts": t}) for k, t in enumerate(times)]
    events.append(("20-0", {"card": "a", "amount": 10**400, "ts": "1765000006"}))
    out = compute(spec, {}, events)
    wanted = "a time from 1970 to 9999 (seconds since the epoch, or ISO 8601)"
    messages = {i: [e.message[:110] for e in errs] for i, errs in out.bad.items()}
    assert messages == {
        **{i: [f"field 'ts' is not {wanted}: {times[i]!r}"[:110]] for i in range(6)},
        9: [f"field 'amount' is not a finite number: {10**400!r}"[:110]],
    }  # a value's text is cut short in the message
    assert out.columns["n"][6:9] == [1, 2, 3]
    assert [m.time_ms for ((_, m),) in out.added[6:9]] == [
        1_765_000_000_500,
        1_765_000_002_000,
        1_765_000_005_000,
    ]


def test_a_server_whose_features_file_cannot_serve_does_not_start_and_says_why(
    tmp_path: Path,
) -> None:
    """Not a 400 to each request of the model, which would blame its callers."""
    bad, good = tmp_path / "bad.yaml", tmp_path / "features.yaml"
    bad.write_text("features: {x: {key: card_id, agg: sum, window: 1m}}")
    good.write_text(ISSUE_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSERVE_")}
    env["MMSERVE_STORE_URL"] = str(tmp_path / "store")
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")

    def serve(features: Path, **more: str) -> tuple[int, str]:
        models = json.dumps({"fraud": {"features": str(features)}})
        run = [mmserve, "serve", "--port", "1"]
        done = subprocess.run(
            run, env={**env, "MMSERVE_MODELS": models, **more}, capture_output=True, timeout=60
        )
        return done.returncode, done.stderr.decode()

    redis = {"MMSERVE_REDIS_URL": "redis://127.0.0.1:1/0"}  # never connected to at start
    assert serve(bad, **redis) == (2, f"error: {bad}: features.x.field: agg 'sum' needs a field\n")
    assert serve(tmp_path / "none.yaml", **redis)[1].startswith(
        f"error: {tmp_path / 'none.yaml'}: cannot read it: [Errno 2]"
    )
    assert serve(good) == (
        2,
        f"error: window features of {good}: MMSERVE_REDIS_URL (or MMSERVE_BROKER_URL) is not "
        "set: the state is in Redis\n",
    )


def test_a_key_or_distinct_value_is_one_whether_it_came_as_text_an_int_or_a_float() -> None:
    """A card 42 from a stream's field ("42"), a JSON document (42) or a V2 FP64 tensor
    (42.0) has one history; a payee 7 likewise counts once."""
    spec = specs.parse(
        "features: {n: {key: card, agg: count, window: 60s}, "
        "d: {key: card, field: payee, agg: count_distinct, window: 60s}}"
    )
    state = {("card", "42"): [Member.of(1_000, "1000-0", {"payee": "7"})]}
    events = [("2000-0", {"card": 42, "payee": 7.0}), ("3000-0", {"card": 42.0, "payee": "7"})]
    out = compute(spec, state, events)
    assert out.columns == {"n": [2, 3], "d": [1, 1]}
    assert windows.groups(spec, [e for _, e in events]) == [("card", "42"), ("card", "42")]
    assert windows.text(0.5) == "0.5" and windows.text(-3.0) == "-3"


def test_a_key_value_of_any_text_has_a_state_of_its_own_under_the_prefix() -> None:
    """The key field's name holds no ':' (refused above), so a value's text, whatever it
    holds, cannot make another key's state key, nor one outside the prefix."""
    spec = specs.parse(ISSUE_YAML)
    values = ["a:b", "a", "b", "a:b:", "{tag}", "a b", "", ":", "x" * 10_000, "../..", "\n"]
    names = [state.key(spec, (k, v)) for k in ("card_id", "account_id") for v in values]
    assert len(set(names)) == len(names)
    assert all(n.startswith("mmserve:features:card_id:") for n in names[: len(values)])
    versions = {state.version(n) for n in names}
    assert len(versions) == len(names) and not versions & set(names)


def test_state_written_under_an_earlier_features_file_counts_but_is_left_out_of_new_fields() -> (
    None
):
    """A features file that now sums a field (or sums one it counted as text) meets members
    without it: they count, are left out of that field's aggregates, and stop nothing."""
    spec = specs.parse(
        "features: {n: {key: card, agg: count, window: 60s}, "
        "s: {key: card, field: amount, agg: sum, window: 60s}, "
        "lo: {key: card, field: amount, agg: min, window: 60s}, "
        "d: {key: card, field: payee, agg: count_distinct, window: 60s}}"
    )
    state = {
        ("card", "a"): [
            Member.of(1_000, "1000-0", {}),  # a count's member only
            Member.of(1_500, "1500-0", {"amount": "3", "payee": "p"}),  # amount was text
            Member.of(1_800, "1800-0", {"amount": 2.0, "payee": "p"}),
        ]
    }
    out = compute(spec, state, [("2000-0", {"card": "a", "amount": "5", "payee": "q"})])
    assert out.columns == {"n": [4], "s": [7.0], "lo": [2.0], "d": [2]}
