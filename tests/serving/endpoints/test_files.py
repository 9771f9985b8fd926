"""Endpoints files: what validates, and refusals that name the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.endpoints import files
from serving.errors import InvalidEndpoints

GOOD = """\
endpoints:
  churn:
    mode: realtime
    variants:
      - {name: blue,  model: churn:3, weight: 90}
      - {name: green, model: churn@champion, weight: 10}
    shadow: {model: churn:5, sample: 1.0}
    capture: {sample: 0.1}
    batching: {max_batch_size: 32, max_wait_ms: 2}
  fraud-pipeline:
    pipeline: [fraud-prep:1, fraud:7]
"""


def test_the_issue_example_validates() -> None:
    declared = files.parse(GOOD).endpoints
    churn = declared["churn"]
    assert churn.declared_weights == {"blue": 90, "green": 10}
    assert [v.steps for v in churn.production_variants] == [["churn:3"], ["churn@champion"]]
    assert churn.shadow is not None and churn.shadow.model == "churn:5"
    assert churn.model_names() == {"churn"}
    pipeline = declared["fraud-pipeline"].production_variants
    assert [(v.name, v.steps, v.weight) for v in pipeline] == [
        ("pipeline", ["fraud-prep:1", "fraud:7"], 1.0)
    ]


@pytest.mark.parametrize(
    ("old", "new", "refusal"),
    [
        (
            "weight: 10}",
            "weight: -1}",
            "line 6: endpoints.churn.variants[1].weight: Input should be greater than or "
            "equal to 0",
        ),
        ("shadow:", "shadw:", "line 7: endpoints.churn.shadw: unknown key"),
        (
            "churn@champion",
            "Churn@x",
            "line 6: endpoints.churn.variants[1].model: invalid model name 'Churn': use 1-64 "
            "characters: a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        ),
        (
            "  fraud-pipeline:",
            "  Fraud:",
            "line 10: endpoints.Fraud (the name): use 1-64 characters: a-z, 0-9, '.', '_', "
            "'-', starting with a letter or digit",
        ),
        ("name: green", "name: blue", "line 2: endpoints.churn: variant names must be unique"),
        (
            "sample: 1.0",
            "sample: 2",
            "line 7: endpoints.churn.shadow.sample: Input should be less than or equal to 1",
        ),
        ("weight: 90", "weight: 0", None),  # green still has 10: fine
        (
            "{name: blue,",
            "{name: blue",
            "line 5: not valid YAML: expected ',' or '}', but got ':'",
        ),
        (
            "mode: realtime",
            "mode: realtime\n    shadow: {model: a}",
            "line 8: endpoints.churn.shadow: repeated key",
        ),
        (
            "fraud:7]",
            "fraud:x]",
            "line 11: endpoints.fraud-pipeline.pipeline[1]: invalid model reference 'fraud:x'",
        ),
        (
            "{name: green,",
            "{name: shadow,",
            "line 2: endpoints.churn: variant name 'shadow' is reserved for the shadow's capture",
        ),
    ],
)
def test_a_refusal_names_the_line_and_the_reason(old: str, new: str, refusal: str | None) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    if refusal is None:
        files.parse(text)
        return
    with pytest.raises(InvalidEndpoints) as caught:
        files.parse(text, "endpoints.yaml")
    assert caught.value.message.startswith(f"endpoints.yaml {refusal}")


def test_every_weight_zero_and_variants_with_a_pipeline_are_refused() -> None:
    zero = GOOD.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 0")
    with pytest.raises(InvalidEndpoints, match=r"line 2: endpoints.churn: at least one variant"):
        files.parse(zero, "e.yaml")
    both = GOOD + "    variants: [{name: a, model: x}]\n"
    with pytest.raises(InvalidEndpoints, match=r"line 10: .*give either variants or pipeline"):
        files.parse(both, "e.yaml")


def test_a_file_that_is_not_a_mapping_or_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidEndpoints, match=r"^e.yaml line 1: expected a mapping"):
        files.parse("- a\n", "e.yaml")
    missing = tmp_path / "absent.yaml"
    with pytest.raises(InvalidEndpoints, match=r"absent.yaml: cannot read it"):
        files.load(missing)
    assert files.parse("").endpoints == {}
