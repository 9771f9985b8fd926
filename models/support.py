"""Support messages: which team should answer a customer's message? A text classifier.

The input is the message itself, a string: sent as a raw ``text/plain`` body, as a V1 or
JSON field, or as a stream event's field. The model is a scikit-learn pipeline (TF-IDF of
words and word pairs, then a logistic regression) fitted on messages made here from
templates (no download), so its answers are the same on every machine.
"""

from __future__ import annotations

import random

import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from serving.metadata import ModelVersion
from serving.registry import Registry

NAME = "support"
ID_COLUMN = "message_id"
FEATURES = ["text"]
DESCRIPTION = "Routes a support message to billing, login, shipping or cancellation."
TAGS = {"data": "synthetic-support-messages", "runtime": "sklearn"}
TEAMS = ("billing", "login", "shipping", "cancellation")
_SUBJECTS = {
    "billing": ["my invoice", "the last charge", "my card payment", "a refund", "the bill"],
    "login": ["my password", "the login page", "two-factor codes", "my account access"],
    "shipping": ["my parcel", "the delivery", "the tracking number", "my order shipment"],
    "cancellation": ["my subscription", "the contract", "my plan", "the membership"],
}
_PROBLEMS = {
    "billing": ["was charged twice", "is wrong", "shows an extra fee", "never arrived by email"],
    "login": ["does not work", "was reset without me", "keeps failing", "is locked"],
    "shipping": ["is late", "was lost", "went to the wrong address", "is stuck in transit"],
    "cancellation": ["should end now", "must be cancelled", "renewed without asking", "stop"],
}
_OPENINGS = ["Hello,", "Hi team,", "Please help:", "", "Urgent!", "Good morning,"]


def messages(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``count`` messages and the team each is for, drawn with ``seed``."""
    rng = random.Random(seed)
    texts, teams = [], []
    for _ in range(count):
        team = rng.choice(TEAMS)
        parts = [rng.choice(_OPENINGS), rng.choice(_SUBJECTS[team]), rng.choice(_PROBLEMS[team])]
        texts.append(" ".join(p for p in parts if p))
        teams.append(team)
    return texts, teams


def sample(rows: int, seed: int = 0) -> pa.Table:
    """Messages as they arrive: an id, then the text."""
    texts, _ = messages(rows, seed + 1)
    ids = [f"msg-{seed}-{i:05d}" for i in range(rows)]
    return pa.table({ID_COLUMN: ids, "text": texts})


def train() -> tuple[Pipeline, pa.Table]:
    """The fitted pipeline (deterministic) and an input example (the text only)."""
    texts, teams = messages(2000)
    frame = pd.DataFrame({"text": texts})
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2)
    model = Pipeline(
        [
            ("text", ColumnTransformer([("words", words, "text")])),
            ("team", LogisticRegression(max_iter=1000)),
        ]
    ).fit(frame, teams)
    return model, pa.Table.from_pandas(frame.head(16), preserve_index=False)


def register(registry: Registry, alias: str = "production") -> ModelVersion:
    model, example = train()
    return registry.register(
        model,
        NAME,
        alias=alias,
        input_example=example,
        description=DESCRIPTION,
        tags={"recipe": __name__, **TAGS},
    )


