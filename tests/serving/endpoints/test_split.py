"""The traffic split, rollout strategies and the weights a step gives each variant."""

from __future__ import annotations

import pytest

from serving.endpoints import strategy
from serving.endpoints.catalog import Served
from serving.endpoints.config import Endpoint
from serving.endpoints.split import Splitter
from serving.endpoints.state import AliasShift, EndpointState, Rollout, percentages, shifted
from serving.errors import InvalidName, VariantNotFound


def served(declared: dict[str, float], seed: int | None = 3, **state: object) -> Served:
    variants = [
        {"name": n, "model": f"m:{i + 1}", "weight": w} for i, (n, w) in enumerate(declared.items())
    ]
    config = Endpoint.model_validate({"variants": variants, "seed": seed})
    return Served("churn", config, EndpointState.seeded(declared).model_copy(update=state))


def test_a_seeded_split_is_reproducible_and_weight_zero_gets_nothing() -> None:
    endpoint = served({"blue": 90, "green": 10, "off": 0})
    first = [Splitter().choose(endpoint).name for _ in range(1)]
    splitter, again = Splitter(), Splitter()
    picks = [splitter.choose(endpoint).name for _ in range(2000)]
    assert picks == [again.choose(endpoint).name for _ in range(2000)]
    assert picks[:1] == first
    assert "off" not in picks
    assert abs(picks.count("green") - 200) <= 5 * (2000 * 0.1 * 0.9) ** 0.5


def test_a_target_pins_its_variant_even_at_weight_zero() -> None:
    endpoint = served({"blue": 100, "off": 0})
    assert {Splitter().choose(endpoint, "off").name for _ in range(50)} == {"off"}
    with pytest.raises(VariantNotFound) as caught:
        Splitter().choose(endpoint, "purple")
    assert (
        caught.value.message == "endpoint 'churn' has no variant 'purple'; its variants: blue, off"
    )


def test_live_weights_rule_and_a_stale_state_falls_back_to_the_config() -> None:
    endpoint = served({"blue": 90, "green": 10}, weights={"blue": 0.0, "green": 100.0})
    assert {Splitter().choose(endpoint).name for _ in range(100)} == {"green"}
    stale = served({"blue": 100, "green": 0}, weights={"old": 100.0})
    assert {Splitter().choose(stale).name for _ in range(100)} == {"blue"}


def test_an_alias_in_promotion_resolves_to_the_new_version_for_its_share() -> None:
    config = Endpoint.model_validate(
        {"variants": [{"name": "main", "model": "churn@champion"}], "seed": 1}
    )
    shift = AliasShift(model="churn", alias="champion", from_version=3, to_version=5)
    rollout = Rollout(
        id="r",
        kind="alias",
        strategy="canary",
        target="t",
        before={},
        alias=shift,
        steps=2,
        share=25.0,
    )
    state = EndpointState.seeded({"main": 1.0}).model_copy(update={"rollout": rollout})
    endpoint, splitter = Served("churn", config, state), Splitter()
    refs = [splitter.steps(endpoint, config.production_variants[0])[0] for _ in range(4000)]
    assert set(refs) == {"churn:3", "churn:5"}
    assert abs(refs.count("churn:5") - 1000) <= 5 * (4000 * 0.25 * 0.75) ** 0.5
    assert shift.matches("churn@champion") and not shift.matches("churn:3")
    assert AliasShift(model="churn", alias="production", from_version=1, to_version=2).matches(
        "churn"
    )


def test_samples_draw_apart_from_the_split() -> None:
    endpoint = served({"blue": 50, "green": 50})
    plain, sampling = Splitter(), Splitter()
    alone = [plain.choose(endpoint).name for _ in range(100)]
    mixed = []
    for _ in range(100):
        sampling.sampled(endpoint, 0.5)
        mixed.append(sampling.choose(endpoint).name)
    assert alone == mixed  # turning a shadow on does not change who answers
    assert sampling.sampled(endpoint, 1.0) and not sampling.sampled(endpoint, 0.0)


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("all-at-once", [(100, 0)]),
        ("all-at-once,bake=2s", [(100, 2)]),
        ("canary:10%,wait=5m", [(10, 300), (100, 0)]),
        ("canary:10%,wait=2s,bake=1m", [(10, 2), (100, 60)]),
        ("linear:20%,every=1m", [(20, 60), (40, 60), (60, 60), (80, 60), (100, 0)]),
        ("linear:50%,every=1h", [(50, 3600), (100, 0)]),
        ("linear:30%,every=500ms", [(30, 0.5), (60, 0.5), (90, 0.5), (100, 0)]),
    ],
)
def test_strategies(text: str, steps: list[tuple[float, float]]) -> None:
    assert [(s.share, s.hold_s) for s in strategy.parse(text)] == steps


BAD_STRATEGIES = ["canary:10%", "canary:0%,wait=1s", "linear:20%,wait=1s", "blue-green"]


@pytest.mark.parametrize(
    "text", [*BAD_STRATEGIES, "canary:x%", "all-at-once,wait=5", "canary:1%,wait=5y"]
)
def test_a_bad_strategy_says_the_grammar(text: str) -> None:
    with pytest.raises(InvalidName, match=r"rollout strategy|duration"):
        strategy.parse(text)


def test_a_step_keeps_the_other_variants_in_proportion() -> None:
    before = {"blue": 60.0, "black": 30.0, "green": 10.0}
    assert shifted(before, "green", 40.0) == {"blue": 40.0, "black": 20.0, "green": 40.0}
    assert shifted(before, "green", 100.0) == {"blue": 0.0, "black": 0.0, "green": 100.0}
    assert percentages({"a": 3.0, "b": 1.0}) == {"a": 75.0, "b": 25.0}
