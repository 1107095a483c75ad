"""drift-sidecar: drift monitoring beside an ML model server, exposed on Prometheus."""

__version__ = "0.1.0"
