"""Demo models: small recipes that train and register models (scikit-learn, XGBoost,
LightGBM...) on synthetic or scikit-learn-bundled data (no downloads).

Each recipe is a module with the same small interface (:class:`Recipe`); ``python -m
models`` (``make demo``) registers them all and serves them.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from models import applications, churn, credit, fraud, fraud_onnx, house_prices, risk
from serving.metadata import ModelVersion
from serving.registry import Registry


class Recipe(Protocol):
    """What a recipe module provides."""

    __name__: str
    NAME: str
    """The registered model name."""
    ID_COLUMN: str
    """The column that identifies a row; passed through, never a feature."""
    FEATURES: list[str]
    """The model's input columns, in the order it was fitted with."""
    DESCRIPTION: str
    TAGS: dict[str, str]

    def sample(self, rows: int, seed: int = 0) -> pa.Table:
        """Rows that look like real input: the id column, then the features."""
        ...

    def train(self) -> tuple[Any, pa.Table]:
        """The fitted model (deterministic; a folder, for code) and an input example. A
        recipe may also name ``OPTIONS``, more arguments to ``Registry.register``."""
        ...


RECIPES: tuple[Recipe, ...] = (
    churn,
    fraud,
    house_prices,
    credit,
    risk,
    fraud_onnx,
    applications,
)


def register(recipe: Recipe, registry: Registry, alias: str = "production") -> ModelVersion:
    """Train ``recipe`` and register it as the next version of its model, under ``alias``."""
    model, example = recipe.train()
    return registry.register(
        model,
        recipe.NAME,
        **getattr(recipe, "OPTIONS", {}),
        alias=alias,
        input_example=example,
        description=recipe.DESCRIPTION,
        tags={"recipe": recipe.__name__, **recipe.TAGS},
    )
