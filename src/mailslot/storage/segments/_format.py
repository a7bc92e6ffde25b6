"""On-disk format of the segment message log (docs/storage-format.md, "Segment log").

Everything is little-endian.

* A segment file ``NNNNNNNN.seg`` starts with the 8-byte :data:`SEGMENT_MAGIC`, then holds batches.
* A batch is what one ``commit()`` wrote: ``BATCH`` header (magic, payload length, crc32 of the payload)
  then the payload, a run of records. The CRC covers the whole batch, so a batch is applied whole or,
  torn or corrupt, not at all.
* A record is ``<u32 length of the whole record> <u8 type>`` then its fields (see each struct below).
"""

from __future__ import annotations

import struct
import sys

# Version 3 added extended append records (F_EXTENDED), version 4 delivery watermark records
# (T_DELIVERED). Older segments simply have none, so they are read as they are; an older mailslot refuses
# newer segments. Version 2 (every append header 38 bytes) lived briefly on the development branch and is
# refused, as is any other version.
SEGMENT_MAGIC = b"MSLGSEG4"
SEGMENT_MAGIC_PREFIX = b"MSLGSEG"
READABLE_MAGICS = (b"MSLGSEG1", b"MSLGSEG3", SEGMENT_MAGIC)
BATCH_MAGIC = b"MSB1"
SEGMENT_SUFFIX = ".seg"

# magic, payload length, crc32(payload)
BATCH = struct.Struct("<4sII")

# Record types.
T_QUEUE = 1  # qid <-> queue key; written in each segment before the first record that uses the qid
T_APPEND = 2
T_REMOVE = 3
T_REDELIVER = 4
T_PURGE = 5
T_DELIVERED = 6  # a queue's delivery watermark (MessageLog.stage_delivered); the last one read wins

# Every record begins with: length of the whole record (header included), type.
REC = struct.Struct("<IB")
# T_QUEUE: len, type, qid, then the UTF-8 queue key up to the record's end.
# T_PURGE: len, type, qid.
QREC = struct.Struct("<IBI")
# T_DELIVERED: len, type, qid, seq (0: the queue has none).
DREC = struct.Struct("<IBIq")
# T_REMOVE / T_REDELIVER: len, type, qid, count, then count x int64 seqs.
SEQS = struct.Struct("<IBII")
# T_APPEND: len, type, qid, seq, flags, len(exchange), len(routing key), len(properties), then, with
# F_EXTENDED only, APPEND_EXT; then exchange (UTF-8), routing key (UTF-8), properties, body (up to the
# record's end).
APPEND = struct.Struct("<IBIqBHHI")
# Deadline (ms since the epoch, 0: none) and requeue count. Without F_EXTENDED the deadline is 0 and the
# count is 1 with F_REDELIVERED, else 0: the common message pays nothing for them.
APPEND_EXT = struct.Struct("<qI")
MAX_REQUEUES = (1 << 32) - 1  # the count saturates here (a u32 in the record)

F_PERSISTENT = 1
F_REDELIVERED = 2
F_EXTENDED = 4

BIG_ENDIAN_HOST = sys.byteorder == "big"  # int64 seq lists are written little-endian

# An index location: bit 63 redelivered, bit 62 transient, bits 40..61 segment id, bits 0..39 offset.
# With bit 63 set the requeue count is 1 unless the queue's index lists another one (_QueueIndex.counts).
# 0 is never a valid location (offset 0 is the segment header), so 0 marks a tombstone.
LOC_REDELIVERED = 1 << 63
LOC_TRANSIENT = 1 << 62
SEG_SHIFT = 40
SEG_MASK = (1 << 22) - 1
OFF_MASK = (1 << 40) - 1


def segment_name(seg: int) -> str:
    return f"{seg:08d}{SEGMENT_SUFFIX}"
