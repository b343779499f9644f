"""SynID: synthetic face-recognition datasets with controllable identity attributes, as Dagster assets."""

__version__ = "0.1.0"
