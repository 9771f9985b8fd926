"""Models made elsewhere, registered as mmserve versions: ``mmserve models import``.

:mod:`serving.imports.mlflow` takes a model from an MLflow tracking server (its model
registry, or a run's artifacts) and registers it through the same
:meth:`~serving.registry.Registry.register` as any other model, so it is checked, stored and
served exactly as one registered directly. Nothing in the core imports this package: MLflow
(the ``mlflow`` extra) is imported only when a model is imported.
"""
