"""The KV record format (FORMAT.md "KV records"): key hashing, encoding and decoding records.

A record holds one or more operations (put or delete) of keys whose hashes share one index
chain, and the address of the chain's previous head (store.py, rule 1). fl_kv.c reads and writes
the same bytes in C; the functions here are the Python side of the format: what compaction and
the reference walks decode, and what tests build records with.

Rules:
1. A record is `header ‖ op*`: header = version:u8, index_bits:u8, ops_count:u16,
   previous_address:u64; op = op:u8, reserved:u8, key_size:u16, value_size:u32, key_hash:u64,
   then the key and the value bytes. Little-endian, no padding.
2. A record is checked right after it is read: decode_record raises RecordCorruptError for
   anything malformed and StoreVersionError for a version-1 record; single_op checks exactly
   what decode_record checks, for the common one-operation record, without building Op objects.
3. Keys and values are bytes: as_key and as_value turn bytes-like arguments into bytes, or raise
   the typed error with the operation first.
"""

from __future__ import annotations

import struct

from ._fast import (
    HASH_KEY1_TWEAK,
    OP_DELETE,
    OP_HEADER_SIZE_BYTES,
    OP_PUT,
    RECORD_HEADER_SIZE_BYTES,
    RECORD_VERSION,
)
from ._kvlayer_c import lib
from .errors import (
    VERSION_1_WHY,
    KeyTooLarge,
    KeyTypeError,
    RecordCorruptError,
    StoreVersionError,
    ValueTypeError,
)

__all__ = [
    "OP_DELETE",
    "OP_HEADER_SIZE_BYTES",
    "OP_PUT",
    "RECORD_HEADER_SIZE_BYTES",
    "RECORD_VERSION",
    "SINGLE",
    "BytesLike",
    "Op",
    "as_key",
    "as_value",
    "batch_ops_count_max",
    "decode_record",
    "encode_record",
    "key_hash",
    "key_size_max_bytes",
    "ops_per_record_max",
    "siphash13",
    "single_op",
]

BytesLike = bytes | bytearray | memoryview

# RECORD_VERSION: 1 had BLAKE2b key hashes, refused with StoreVersionError (FORMAT.md). The
# format's numbers are defined once, in _fast (twins of the C constants, checked at import).
_HEADER = struct.Struct("<BBHQ")  # version, index bits, ops count, previous address
_OP = struct.Struct("<BBHIQ")  # op, reserved, key size, value size, key hash
SINGLE = struct.Struct("<BBHQBBHIQ")  # a header and its one operation: the common record
# Invariant: the struct layouts spell the sizes the C code and FORMAT.md use.
assert _HEADER.size == RECORD_HEADER_SIZE_BYTES and _OP.size == OP_HEADER_SIZE_BYTES
assert SINGLE.size == RECORD_HEADER_SIZE_BYTES + OP_HEADER_SIZE_BYTES
key_size_max_bytes = 65535  # the key size field is 16 bits
ops_per_record_max = 65535  # the ops count field is 16 bits
batch_ops_count_max = 65535  # one put_many is at most this many distinct keys

_HASH_KEY1_TWEAK = HASH_KEY1_TWEAK  # "kvlayer2"
_MASK64 = (1 << 64) - 1
_siphash13_c = lib.fl_kv_siphash13


def key_hash(key: bytes, salt: int = 0) -> int:
    """The 64-bit hash of a key in a store whose log has this salt (FORMAT.md "KV records"):
    SipHash-1-3 with the key (salt, salt ^ "kvlayer2"). KVStore.key_hash(key) is a store's
    own; with the default salt 0 it is a fixed hash, stable across processes and stores (for
    orderings such as a SCAN cursor), but not the one any store's records carry."""
    return _siphash13_c(salt, salt ^ _HASH_KEY1_TWEAK, key, len(key))


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & _MASK64


def siphash13(k0: int, k1: int, data: bytes, c_rounds: int = 1, d_rounds: int = 3) -> int:
    """The Python reference of fl_kv_siphash13 (tests compare them; with rounds 2 and 4 it is
    the SipHash-2-4 of the paper, checked against its test vector)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    full = len(data) - len(data) % 8
    for position in range(0, full, 8):
        m = int.from_bytes(data[position:position + 8], "little")
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[full:], "little")
    v3 ^= last
    rounds(c_rounds)
    v0 ^= last
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


class Op:
    __slots__ = ("hash", "key", "kind", "value")

    def __init__(self, kind: int, key: bytes, value: bytes, hash_: int) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.hash = hash_


def encode_record(index_bits: int, previous_address: int, ops: list[Op]) -> bytes:
    parts = [_HEADER.pack(RECORD_VERSION, index_bits, len(ops), previous_address)]
    for op in ops:
        parts.append(_OP.pack(op.kind, 0, len(op.key), len(op.value), op.hash))
        parts.append(op.key)
        parts.append(op.value)
    return b"".join(parts)


def decode_record(payload: bytes, address: int) -> tuple[int, int, list[Op]]:
    """Returns (index_bits, previous_address, ops); RecordCorruptError if malformed."""
    def corrupt(why: str) -> RecordCorruptError:
        return RecordCorruptError(f"read record at {address} failed: {why}", address)

    if len(payload) < RECORD_HEADER_SIZE_BYTES:
        raise corrupt(f"{len(payload)} bytes is shorter than a record header")
    version, index_bits, ops_count, previous = _HEADER.unpack_from(payload)
    if version == 1:
        raise StoreVersionError(f"read record at {address} failed: {VERSION_1_WHY}",
                                address)
    if version != RECORD_VERSION:
        raise corrupt(f"unknown record version {version}")
    if ops_count == 0 or index_bits > lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX:
        raise corrupt(f"bad header (ops_count {ops_count}, index_bits {index_bits})")
    if previous >= address or 0 < previous < lib.FL_FIRST_ADDRESS:
        raise corrupt(f"previous address {previous} does not point backwards")
    ops = []
    position = RECORD_HEADER_SIZE_BYTES
    for _ in range(ops_count):
        if position + OP_HEADER_SIZE_BYTES > len(payload):
            raise corrupt("an operation header runs past the record")
        kind, reserved, key_size, value_size, hash_ = _OP.unpack_from(payload, position)
        position += OP_HEADER_SIZE_BYTES
        end = position + key_size + value_size
        if kind not in (OP_PUT, OP_DELETE) or reserved or end > len(payload):
            raise corrupt(f"bad operation (op {kind}, key {key_size} B, value {value_size} B)")
        if kind == OP_DELETE and value_size:
            raise corrupt("a delete carries a value")
        key = payload[position:position + key_size]
        ops.append(Op(kind, key, payload[position + key_size:end], hash_))
        position = end
    if position != len(payload):
        raise corrupt(f"{len(payload) - position} stray bytes after the last operation")
    return index_bits, previous, ops


def single_op(payload: bytes, address: int) -> tuple[int, int, int, int] | None:
    """(previous_address, op, key_size, key_hash) of a valid one-operation record, else None
    (then decode_record decides: several operations, or corrupt). Checks exactly what
    decode_record checks."""
    if len(payload) < SINGLE.size:
        return None
    (version, index_bits, ops_count, previous, kind, reserved, key_size, value_size,
     op_hash) = SINGLE.unpack_from(payload)
    if (version == RECORD_VERSION and ops_count == 1 and reserved == 0
            and (kind == OP_PUT or kind == OP_DELETE and not value_size)
            and SINGLE.size + key_size + value_size == len(payload)
            and index_bits <= lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX
            and (previous == 0 or lib.FL_FIRST_ADDRESS <= previous < address)):
        return previous, kind, key_size, op_hash
    return None


def as_key(key: object, operation: str) -> bytes:
    if type(key) is bytes:
        data = key
    elif isinstance(key, (bytearray, memoryview)):
        data = bytes(key)
    else:
        raise KeyTypeError(f"{operation} failed: a key must be bytes, not {type(key).__name__}")
    if len(data) > key_size_max_bytes:
        raise KeyTooLarge(f"{operation} failed: key of {len(data)} bytes exceeds "
                          f"key_size_max_bytes ({key_size_max_bytes})")
    return data


def as_value(value: object, operation: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise ValueTypeError(f"{operation} failed: a value must be bytes, not "
                         f"{type(value).__name__}")
