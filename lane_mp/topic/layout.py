"""Byte layout of a topic segment: the single place that defines where every field lives.

A topic is one POSIX shared-memory segment named ``lmp_<topic name>.topic``. All integers are
little-endian; every cross-process counter is an aligned 8-byte word inside one cache line, read
and written only through a ``memoryview.cast("Q")`` (never ``struct.pack_into``: CPython zero-fills
the field before writing it and a concurrent reader can see the 0 — see MEASURED.md)::

    offset  size  field                       written by            read by
    ------  ----  --------------------------  --------------------  ------------------------------
    line 0: static configuration, written once by the creator before MAGIC
       0     8    magic  "LMPTOPIC" (written last: attach waits for it)
       8     8    layout version (1)
      16     8    capacity: bytes in the data area (multiple of 8)
      24     8    max_message_bytes (payload bytes; one record <= capacity / 2)
      32     8    max_consumers (slots in the consumer table)
      40     8    policy: 0 block, 1 error, 2 drop_slowest
      48     8    data_offset (page aligned)
      56     8    slots_offset
    line 1 (64): the producer cursor, written only while holding the append lock
      64     8    head_pos   virtual byte position just past the last *published* record
      72     8    head_seq   sequence number of the last published record (0: none yet)
      80     8    lock_owner pid inside the append critical section, 0 when it left cleanly
    line 2 (128): the retention cursor, written only while holding the append lock
     128     8    tail_pos   virtual byte position of the oldest retained record
     136     8    tail_seq   sequence number of the oldest retained record (head_seq + 1 if empty)
     144     8    dropped    records reclaimed under drop_slowest before a consumer had read them
     152     8    reaped     consumers removed because their process died
    line 3 (192): control
     192     8    closed     1 once the owner unlinked the topic
     200     8    slot_hwm   1 + highest slot index ever used (bounds every table scan)
     208     8    owner_pid
     216     8    created_ns (time.time_ns() at creation)
    256 .. slots_offset + max_consumers * 192: the consumer table (below)
    data_offset .. data_offset + capacity: the log, a ring of contiguous records
    + 48 bytes of slack (never written) so a record header can always be unpacked whole

Consumer slot (192 bytes, three cache lines so the consumer's hot words never share a line with
fields the lock holder writes)::

    line A, written by the consumer only
      +0   position     committed virtual byte position (what retention respects)
      +8   next_seq     committed next sequence number to read
      +16  last_active  time.monotonic_ns() of the last read/commit/wait (system-wide on Linux)
      +24  sleeping     1 while the consumer waits on its doorbell FIFO
      +32  reads        messages returned so far
      +40  lost         messages lost to drop_slowest so far
    line B, written by the lock holder (register / remove / take over)
      +64  state        0 free, 1 active (owned by pid), 2 detached (kept for resume, no process)
      +72  token        random, changes on every registration: a removed consumer notices
      +80  pid
      +88  proc_start   process create time in microseconds (pid reuse check)
    line C
      +128 id_len, +136 .. +192 the consumer id in UTF-8 (at most 56 bytes)

Positions are *virtual*: they only grow; the physical offset is ``pos % capacity``. So
``head_pos - tail_pos`` is the number of bytes in use and a position compares meaningfully with
any other, which is what lets a consumer detect that retention passed it.

Record (8-aligned, never split across the end of the ring)::

     0  u32  total_len   whole record incl. header, meta, data and padding (multiple of 8)
     4  u8   kind        1 message, 2 wrap marker (only total_len and kind are meaningful)
     5  u8   flags       1: payload is msgspec msgpack (publish_obj), 2: group member
     6  u8   producer_len
     7  u8   type_len
     8  u64  sequence
    16  f64  timestamp   time.time() at publish (one clock read per batch; a float so readers
                         hand it out without converting)
    24  u32  data_len
    28  u8   group_len   (3 bytes padding)
    32  u32  group_size  (0 on members after the first)
    36  u32  group_index
    40  u64  meta_key    xxh3_64 of the meta bytes below (0 if none): readers cache the decoded
                         strings by it instead of copying the bytes out for every record
    48       producer id, message type, group id (UTF-8), padded to 8; then data, padded to 8

A record that does not fit before the end of the ring is preceded by a wrap marker covering the
rest of the ring, so every record is one contiguous slice (decode straight from the mapping).

Memory ordering: the publisher writes the record, then stores ``head_pos`` (one aligned 8-byte
store); a consumer loads ``head_pos`` and then the records before it. x86 (TSO) keeps stores in
order and loads in order, which is all this relies on — and the same for the reverse check a
consumer does after copying (``tail_pos`` reloaded; a record starting before it may have been
overwritten). On a weakly ordered CPU (ARM) this needs real barriers: this docstring is the one
place the assumption lives.
"""

from __future__ import annotations

import struct
from typing import Final


def align8(n: int) -> int:
    return (n + 7) & ~7


MAGIC: Final = int.from_bytes(b"LMPTOPIC", "little")
VERSION: Final = 1

LINE: Final = 64
HEADER_BYTES: Final = 256
SLOT_BYTES: Final = 192
PAGE: Final = 4096

# Word indexes (offset // 8) into the header, for the memoryview.cast("Q") of the segment.
W_MAGIC: Final = 0
W_VERSION: Final = 1
W_CAPACITY: Final = 2
W_MAX_MESSAGE: Final = 3
W_MAX_CONSUMERS: Final = 4
W_POLICY: Final = 5
W_DATA_OFFSET: Final = 6
W_SLOTS_OFFSET: Final = 7
W_HEAD_POS: Final = 8
W_HEAD_SEQ: Final = 9
W_LOCK_OWNER: Final = 10
W_TAIL_POS: Final = 16
W_TAIL_SEQ: Final = 17
W_DROPPED: Final = 18
W_REAPED: Final = 19
W_CLOSED: Final = 24
W_SLOT_HWM: Final = 25
W_OWNER_PID: Final = 26
W_CREATED_NS: Final = 27

# Word offsets inside a slot (add to the slot's first word index).
S_POSITION: Final = 0
S_NEXT_SEQ: Final = 1
S_LAST_ACTIVE: Final = 2
S_SLEEPING: Final = 3
S_READS: Final = 4
S_LOST: Final = 5
S_STATE: Final = 8
S_TOKEN: Final = 9
S_PID: Final = 10
S_PROC_START: Final = 11
S_ID_LEN: Final = 16
SLOT_ID_OFFSET: Final = 136  # byte offset of the id text inside a slot
MAX_ID_BYTES: Final = SLOT_BYTES - SLOT_ID_OFFSET

SLOT_FREE: Final = 0
SLOT_ACTIVE: Final = 1
SLOT_DETACHED: Final = 2

POLICIES: Final = ("block", "error", "drop_slowest")

KIND_MESSAGE: Final = 1
KIND_WRAP: Final = 2
FLAG_OBJ: Final = 1
FLAG_GROUP: Final = 2

# A struct for the record header is fine (unlike counters): nobody reads a record until head_pos
# is published after it, so a zero-filled intermediate state is never observed.
RECORD = struct.Struct("<IBBBBQdIB3xIIQ")
RECORD_HEADER: Final = RECORD.size
WRAP = struct.Struct("<IB")
MAX_META_BYTES: Final = 255  # each of producer id, message type and group id
# Metadata (producer id + type + group id) that a max_message_bytes payload is guaranteed room
# for; longer metadata is allowed but shrinks the largest payload of that one message.
RESERVED_META: Final = 64


def max_data_bytes(capacity: int, meta_len: int) -> int:
    """Largest payload that keeps a record within half the ring (see ``Topic.create``)."""
    return (capacity // 2 - RECORD_HEADER - align8(meta_len)) & ~7


assert RECORD_HEADER == 48


def record_size(meta_len: int, data_len: int) -> int:
    """Bytes a message record occupies in the ring."""
    return RECORD_HEADER + align8(meta_len) + align8(data_len)


def slots_offset() -> int:
    return HEADER_BYTES


def data_offset(max_consumers: int) -> int:
    end = HEADER_BYTES + max_consumers * SLOT_BYTES
    return (end + PAGE - 1) // PAGE * PAGE


def segment_bytes(capacity: int, max_consumers: int) -> int:
    # RECORD_HEADER bytes of slack past the ring: a reader unpacks a whole record header even at
    # a wrap marker in the last 8 bytes (only its first 8 bytes mean anything there), which saves a
    # second unpack per record on the hot path.
    return data_offset(max_consumers) + capacity + RECORD_HEADER


def slot_word(slot: int) -> int:
    """Index of a slot's first word in the cast("Q") view."""
    return (HEADER_BYTES + slot * SLOT_BYTES) // 8


def slot_byte(slot: int) -> int:
    return HEADER_BYTES + slot * SLOT_BYTES
