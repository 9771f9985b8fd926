"""The FastAPI application: real-time predict routes, model metadata, health."""

from serving.http.app import create_app

__all__ = ["create_app"]
