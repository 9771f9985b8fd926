"""``python -m models`` (``make demo``): register every demo model, then serve it.

The demo is a list of sections run in order against one registry. Each prints its part
and returns a phrase for the closing summary; a new mode adds its section to ``SECTIONS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from models import RECIPES, Recipe, register
from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import Settings

ALIAS = "production"
SAMPLE_ROWS = 5
SAMPLE_SEED = 2024

Section = Callable[[Console, Registry], str]


def register_models(console: Console, registry: Registry) -> str:
    """Train each recipe and register it under the ``production`` alias."""
    console.rule("Register")
    table = Table("model", "alias", "task", "inputs", "outputs", "trained + stored")
    for recipe in RECIPES:
        started = time.perf_counter()
        mv = register(recipe, registry, alias=ALIAS)
        seconds = time.perf_counter() - started
        outputs = ", ".join(mv.outputs)
        table.add_row(mv.ref, ALIAS, mv.task, str(len(mv.inputs)), outputs, f"{seconds:.2f} s")
    console.print(table)
    return f"{len(RECIPES)} models registered"


def predict_samples(console: Console, registry: Registry) -> str:
    """Load each model through its alias and score a few sample rows."""
    console.rule("Predict")
    for recipe in RECIPES:
        _show_predictions(console, registry, recipe)
    return f"{SAMPLE_ROWS * len(RECIPES)} rows scored"


SECTIONS: tuple[Section, ...] = (register_models, predict_samples)


def _show_predictions(console: Console, registry: Registry, recipe: Recipe) -> None:
    ref = f"{recipe.NAME}@{ALIAS}"
    started = time.perf_counter()
    predictor = registry.load(ref)
    load_ms = (time.perf_counter() - started) * 1000
    rows = recipe.sample(SAMPLE_ROWS, SAMPLE_SEED)
    scored = predictor.predict(rows, passthrough=[recipe.ID_COLUMN])
    console.print(f"\n{ref} -> [bold]{predictor.ref}[/], loaded in {load_ms:.0f} ms")
    table = Table()
    for name in scored.column_names:
        table.add_column(name, justify="left" if name == recipe.ID_COLUMN else "right")
    for row in scored.to_pylist():
        table.add_row(*(_cell(value) for value in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def main() -> int:
    settings = Settings()
    console = Console()
    console.print(f"mmserve demo, store [bold]{settings.store_url}[/]")
    started = time.perf_counter()
    registry = Registry.from_settings(settings)
    try:
        done = [section(console, registry) for section in SECTIONS]
    except MMServeError as err:
        Console(stderr=True).print(f"[red]error:[/] {err.message}", highlight=False)
        return 1
    console.print(f"\n[green]done[/]: {', '.join(done)} in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
