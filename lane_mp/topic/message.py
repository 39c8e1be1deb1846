"""What a reader gets back: :class:`Message`, and the monitoring snapshots.

``Message`` is a frozen msgspec Struct rather than a dataclass because one is built per record on
the read path and a Struct is ~60 ns to build (a slotted dataclass is several times that). It is
never encoded, so holding a ``memoryview`` in ``data`` (``read(copy=False)``) is fine.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lane_mp.errors import DecodeError

__all__ = ["ConsumerInfo", "Message", "TopicStats"]

_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def _decoder(type_: Any) -> msgspec.msgpack.Decoder[Any]:
    dec = _DECODERS.get(type_)
    if dec is None:
        dec = _DECODERS[type_] = msgspec.msgpack.Decoder(type_)
    return dec


class Message(msgspec.Struct, frozen=True, gc=False):
    """One record of a topic.

    ``data`` is ``bytes`` (a private copy) unless the read asked for ``copy=False``: then it is a
    read-only ``memoryview`` into the shared log, valid until this consumer's next read or
    commit — copy it (``bytes(msg.data)``) to keep it longer. Under ``drop_slowest`` even that
    window can be cut short if this consumer becomes the slowest; check
    :meth:`Consumer.view_valid` after using a view if that matters.

    ``lost`` is how many messages this consumer lost just before this one because retention
    (``drop_slowest``) reclaimed them before it read them: never silent, never negative.
    """

    sequence: int
    timestamp: float
    producer_id: str
    message_type: str
    data: bytes | memoryview
    lost: int = 0
    group_id: str | None = None
    group_index: int = 0
    group_size: int = 0
    is_obj: bool = False

    def obj(self, type: Any = Any) -> Any:
        """Decode a payload published with :meth:`Publisher.publish_obj` (msgspec msgpack)."""
        try:
            return _decoder(type).decode(self.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodeError(
                f"message {self.sequence} is not a valid msgpack payload: {exc}", sequence=self.sequence
            ) from exc


class ConsumerInfo(msgspec.Struct, frozen=True):
    """One row of the consumer table, as seen at the time of the snapshot.

    ``position`` is the committed next sequence number; ``lag`` is how many published messages
    lie at or after it. ``alive`` is None for a detached consumer (no process owns it).
    """

    consumer_id: str
    slot: int
    pid: int
    alive: bool | None
    detached: bool
    position: int
    lag: int
    lag_bytes: int
    idle_seconds: float
    reads: int
    lost: int
    sleeping: bool


class TopicStats(msgspec.Struct, frozen=True):
    """A snapshot of a topic. Taken without the lock, so fields may be a few messages apart."""

    name: str
    policy: str
    capacity_bytes: int
    max_message_bytes: int
    bytes_used: int
    head_sequence: int
    tail_sequence: int
    messages_retained: int
    head_position: int
    tail_position: int
    dropped: int
    reaped: int
    closed: bool
    consumers: tuple[ConsumerInfo, ...]
