"""The traffic split: which variant answers a request, and which version an alias in
promotion gives it.

Per request, a weighted random draw among the variants with weight above 0; a variant
with weight 0 answers only when targeted. Each endpoint draws from its own generator,
seeded by its ``seed`` (or ``MMSERVE_DEPLOYMENT__SEED``): the same requests in the same
order go to the same variants. Samples (shadow, capture) and alias draws use generators
of their own, so turning a shadow on does not change which variant answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from serving.endpoints.catalog import Served
from serving.endpoints.config import Variant
from serving.errors import VariantNotFound


@dataclass
class _Draws:
    seed: int | None
    split: random.Random
    sample: random.Random
    alias: random.Random


class Splitter:
    """Chooses variants and versions for the requests of every endpoint."""

    def __init__(self, default_seed: int | None = None):
        self.default_seed = default_seed
        self._draws: dict[str, _Draws] = {}

    def choose(self, served: Served, target: str | None = None) -> Variant:
        """The variant ``target`` names (:class:`VariantNotFound` if none), else one drawn
        by the live weights."""
        variants = served.config.production_variants
        if target:
            for variant in variants:
                if variant.name == target:
                    return variant
            raise VariantNotFound(served.name, target, [v.name for v in variants])
        weights = served.state.weights
        if set(weights) != {v.name for v in variants}:  # a state older than its config
            weights = served.config.declared_weights
        live = [(v, weights[v.name]) for v in variants if weights[v.name] > 0]
        if len(live) == 1:
            return live[0][0]
        point = self._of(served).split.random() * sum(w for _, w in live)
        for variant, weight in live:
            point -= weight
            if point < 0:
                return variant
        return live[-1][0]  # float rounding at the very top of the range

    def steps(self, served: Served, variant: Variant) -> list[str]:
        """The model references ``variant`` is served by for this request: during a
        promotion, its alias resolves to the new version for the rollout's share."""
        rollout = served.state.rollout
        shift = rollout.alias if rollout is not None else None
        if shift is None or rollout is None:
            return variant.steps
        refs = []
        for ref in variant.steps:
            if shift.matches(ref):
                new = self._of(served).alias.random() * 100 < rollout.share
                ref = shift.new_ref if new else shift.old_ref
            refs.append(ref)
        return refs

    def sampled(self, served: Served, fraction: float) -> bool:
        """Whether this request is in a ``fraction`` sample (shadow, capture)."""
        if fraction >= 1:
            return True
        return fraction > 0 and self._of(served).sample.random() < fraction

    def _of(self, served: Served) -> _Draws:
        seed = served.config.seed if served.config.seed is not None else self.default_seed
        draws = self._draws.get(served.name)
        if draws is None or draws.seed != seed:
            # Three generators from one seed: independent streams, each reproducible.
            base = random.Random(seed)
            streams = [random.Random(base.getrandbits(64)) for _ in range(3)]
            draws = self._draws[served.name] = _Draws(seed, *streams)
        return draws
