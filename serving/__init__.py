"""mmserve's core: settings, the object store, the model registry and the one predict path."""

__version__ = "0.1.0"
