"""What an endpoint is, as an endpoints file declares it::

    endpoints:
      churn:
        mode: realtime                 # or serverless (idle_ttl_s, max_concurrency, provisioned)
        variants:
          - {name: blue,  model: churn:3, weight: 90}
          - {name: green, model: churn@champion, weight: 10}
        shadow: {model: churn:5, sample: 1.0}
        capture: {sample: 0.1}
        batching: {max_batch_size: 32, max_wait_ms: 2}
      fraud-pipeline:
        pipeline: [fraud-prep:1, fraud:7]   # each model's output feeds the next

A pipeline endpoint is served as one variant named ``pipeline``; a variant may also be a
pipeline itself (``{name: green, pipeline: [prep:2, fraud:8]}``). Unknown keys are refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from serving.errors import MMServeError
from serving.refs import ModelRef

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
PIPELINE_VARIANT = "pipeline"
"""The one variant of an endpoint declared with ``pipeline:``."""
SHADOW = "shadow"
"""Reserved: the variant name under which the shadow's answers are captured."""


def _ref(value: str) -> str:
    try:
        ModelRef.parse(value)
    except MMServeError as err:
        raise ValueError(err.message) from None
    return value


Ref = Annotated[str, AfterValidator(_ref)]
"""A model reference: ``churn``, ``churn:3``, ``churn@champion``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Variant(_Strict):
    """A production variant: a model (or a pipeline of models) and its share of traffic."""

    name: Name
    model: Ref | None = None
    """Any model reference: ``churn``, ``churn:3``, ``churn@champion``."""
    pipeline: list[Ref] | None = Field(None, min_length=1)
    """Model references applied in order, each one's outputs merged over its inputs."""
    weight: float = Field(1.0, ge=0)
    """Relative share of the requests (weights need not add up to 100)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Variant:
        if (self.model is None) == (self.pipeline is None):
            raise ValueError(f"variant {self.name!r}: give either model or pipeline")
        return self

    @property
    def steps(self) -> list[str]:
        """The model references this variant applies, in order (one for a plain model)."""
        return list(self.pipeline) if self.pipeline is not None else [str(self.model)]


class Shadow(_Strict):
    """A model that sees (a sample of) the traffic after each answer; its answers are only
    counted and captured, never returned."""

    model: Ref
    sample: float = Field(1.0, ge=0, le=1)
    """Fraction of the requests also sent to the shadow."""
    capture: bool = True
    """Capture every shadowed request with both answers (what ``endpoints compare`` reads)."""


class Capture(_Strict):
    """Data capture: requests and answers written to the store as parquet."""

    sample: float = Field(ge=0, le=1)
    """Fraction of the requests captured (with their answers)."""


class Batching(_Strict):
    """Micro-batching of the endpoint's models (over the server's per-model policy)."""

    batching: bool | None = None
    max_batch_size: int | None = Field(None, ge=1)
    max_wait_ms: float | None = Field(None, ge=0)


class Serverless(_Strict):
    """Scale to zero for the endpoint's models (``mode: serverless``)."""

    idle_ttl_s: float | None = Field(None, gt=0)
    """Unload a model unused this long (unset: ``MMSERVE_SERVERLESS__IDLE_TTL_S``)."""
    max_concurrency: int | None = Field(None, ge=1)
    """Most in-flight requests per model; more get 429."""
    provisioned: bool = False
    """Keep the models loaded (warm) however long they are idle."""


class Endpoint(_Strict):
    """A named, served thing: weighted variants (or a pipeline), a shadow, capture."""

    mode: Literal["realtime", "serverless"] = "realtime"
    variants: list[Variant] | None = Field(None, min_length=1)
    pipeline: list[Ref] | None = Field(None, min_length=1)
    """Shorthand for one variant, ``pipeline``, applying these models in order."""
    shadow: Shadow | None = None
    capture: Capture | None = None
    batching: Batching | None = None
    serverless: Serverless | None = None
    seed: int | None = None
    """Seed of this endpoint's traffic split (and samples): the same requests in the same
    order go to the same variants."""

    @model_validator(mode="after")
    def _consistent(self) -> Endpoint:
        if (self.variants is None) == (self.pipeline is None):
            raise ValueError("give either variants or pipeline")
        names = [v.name for v in self.variants or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names must be unique: {', '.join(repeated)} repeated")
        if SHADOW in names:
            raise ValueError(f"variant name {SHADOW!r} is reserved for the shadow's capture")
        if self.variants is not None and not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        if self.serverless is not None and self.mode != "serverless":
            raise ValueError("serverless settings need mode: serverless")
        return self

    @property
    def production_variants(self) -> list[Variant]:
        """The variants traffic is split over (a pipeline endpoint's one variant)."""
        if self.variants is not None:
            return list(self.variants)
        return [Variant(name=PIPELINE_VARIANT, pipeline=self.pipeline, weight=1)]

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.production_variants if v.name == name), None)

    @property
    def declared_weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.production_variants}

    def model_names(self) -> set[str]:
        """Every registered model the endpoint calls (variants, pipeline steps, shadow)."""
        refs = [ref for v in self.production_variants for ref in v.steps]
        refs += [self.shadow.model] if self.shadow else []
        return {ModelRef.parse(ref).name for ref in refs}


class EndpointsFile(_Strict):
    """The whole file: ``endpoints: {name: endpoint}``."""

    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
