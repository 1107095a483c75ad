"""What a Monitor reports about the events it was given."""

from __future__ import annotations

from dataclasses import dataclass

DROP_REASONS = (
    "buffer_full",
    "not_connected",
    "invalid_input",
    "send_failed",
    "too_large",
    "closed",
)
"""Why an event was not sent; the keys of `ClientStats.dropped`."""


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of what a Monitor did with the events it was given."""

    sent: int
    """Events written completely to the socket (handed to the kernel)."""
    dropped: dict[str, int]
    """Events given up on, by reason (every key of DROP_REASONS is present)."""
    buffered: int
    """Events waiting in the buffer, not yet encoded."""
    pending: int
    """Events encoded and waiting for the socket to take them."""
    pending_bytes: int
    """Bytes of encoded events waiting for the socket."""
    connected: bool
    """Whether the flusher holds a connection now."""
    reconnects: int
    """Connections made after the first one (the sidecar restarted or was late)."""
    connect_failures: int
    """Connection attempts that failed (no socket file, nobody listening)."""
    bytes_sent: int
    """Bytes written to the socket."""
    frames: bool = False
    """Whether batches go as Arrow frames now (a frames connection is open)."""

    @property
    def dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.dropped.values())
