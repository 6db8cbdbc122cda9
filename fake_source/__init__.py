"""A KPIggybank stand-in: the same HTTP API over seeded, deterministic interaction-data blobs."""

from fake_source.app import create_app

__all__ = ["create_app"]
