"""What a model server imports: send prediction events to the drift sidecar.

    from sidecar.client import Monitor

    monitor = Monitor("/var/run/drift-sidecar/events.sock", model="fraud", version="1.0.0")
    monitor.record(features={"amount": 12.5}, prediction=0.91, latency_s=0.004)

Recording never blocks and never raises; see docs/client.md for the guarantees.
"""

from sidecar.client._monitor import Monitor, default_socket_path
from sidecar.client._stats import DROP_REASONS, ClientStats
from sidecar.client._timing import Timed

__all__ = ["DROP_REASONS", "ClientStats", "Monitor", "Timed", "default_socket_path"]
