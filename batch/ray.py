"""Score a Ray Dataset with a registered model: a callable class for ``map_batches``.

::

    import ray.data
    from batch.ray import Scorer, pin
    ds = ray.data.read_parquet("s3://bucket/customers/")
    out = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"ref": pin("churn@production"), "passthrough": ["customer_id"]},
        batch_format="pyarrow",
        concurrency=4,  # Ray >= 2.51: compute=ray.data.ActorPoolStrategy(size=4)
    )

Each actor builds one :class:`Scorer`: it pins the reference, loads the model once (the
registry checks the artifact's sha256) and scores every Arrow batch it is handed exactly
as ``mmserve batch run`` scores a part's. An actor pins when it starts, and actors start
at different times: :func:`pin` the reference on the driver (``churn@production`` ->
``churn:3``) and an alias moved while the job runs changes nothing.

Where the registry is comes from ``settings`` (default: each actor's own ``MMSERVE_*``
environment, which a local ``ray.init`` copies from the driver): pass the driver's
``Settings()`` on a cluster whose workers were started elsewhere.

Bad rows: ``on_error="fail"`` (the default) fails the job with the batch runner's
:class:`~batch.parts.BadRow` naming the batch's row, the reason and the row's first
passthrough value (Ray wraps it in its ``UserCodeException`` unless
``DataContext.get_current().raise_original_map_exception = True``); ``"skip"`` leaves
a bad row out and writes the batch's rejects (the passthrough columns, ``row``, ``reason``)
to a parquet file of its own under ``rejects``. A batch Ray runs again writes its rejects
again under another name: tell them apart by a passthrough id. Needs ``mmserve[ray]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pyarrow as pa

from batch import engines
from serving import scorers
from serving.settings import Settings


def pin(ref: str, settings: Settings | None = None) -> str:
    """``ref`` with each step's version as it resolves now, on the driver: ``churn:3``."""
    return scorers.pin(engines.Source.of(settings or Settings()).open(), ref)


class Scorer:
    """A model (or a chain of models) scoring Ray Data's Arrow batches: ``map_batches(Scorer,
    fn_constructor_kwargs={"ref": ...}, batch_format="pyarrow")``."""

    def __init__(
        self,
        ref: str,
        passthrough: Sequence[str] = (),
        on_error: engines.OnError = "fail",
        rejects: str | None = None,
        settings: Settings | None = None,
    ):
        self.job = engines.plan(ref, settings or Settings(), passthrough, on_error, rejects)
        self.model = engines.scorer(self.job)  # once per actor, before its first batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The answers to ``batch``: its passthrough columns, then the model's outputs."""
        if not isinstance(batch, pa.Table):
            raise TypeError(
                f"Scorer takes Arrow batches (batch_format='pyarrow'), not {type(batch)}"
            )
        scored, rejects = engines.score(self.job, self.model, batch, "Ray Data batch")
        if rejects is not None:
            engines.write_rejects(self.job, f"{uuid.uuid4().hex}.parquet", rejects)
        return scored
