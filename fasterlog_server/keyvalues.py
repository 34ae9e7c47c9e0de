"""The KV view of the server: Redis strings kept in a kvlayer KVStore.

Where: the store is its own log in the `kv` directory inside the server's log directory (the
stream log's records are msgpack, the store's are kvlayer records; one log per format keeps
each replay simple and leaves kvlayer's recovery untouched). A reply that wrote to both waits
for both commits. A transaction (MULTI/EXEC) is atomic within each log: its stream records are
one append_many, its KV writes one `write_batch`; a crash between the two commits of a
transaction that wrote both kinds can keep one half (documented in the README).

Values are stored in an envelope so that an expiry survives a restart:
    b"\\x00" + value                                   no expiry
    b"\\x01" + expire-at (u64 little-endian, Unix ms) + value
An expired key is invisible to every command (it reads as missing) and is deleted durably by
the server's expiry sweep or by the next write to it.

Pending writes: `put` and `delete` go to an in-memory overlay that reads consult, and `flush()`
writes the overlay with one `KVStore.write_batch(commit=False)` (atomic), so a pipeline's KV
writes cost one batch and one commit. The server's group committer flushes right before each
commit, so the overlay holds the writes of every connection waiting for the next commit, and
they share one batch (writes of one connection's pipeline or MULTI/EXEC are always in the same
batch, so each stays atomic). While a KV checkpoint runs in its worker thread it holds the
store's write lock, which the event loop must never wait for: `held` is set meanwhile, and
`flush` leaves the overlay as it is (reads still see it) until the first commit after the
checkpoint (maintenance.py rule 2).
Only KVStore's public API is used.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

from kvlayer import KVStore
from kvlayer.store import OP_HEADER_SIZE_BYTES, RECORD_HEADER_SIZE_BYTES

from .streams import StreamError

ENVELOPE_PLAIN = 0
ENVELOPE_EXPIRING = 1
_EXPIRY = struct.Struct("<Q")
_BATCH_KEYS_MAX = 65535  # kvlayer's batch_ops_count_max
_DISCOVERY_AT_OPEN_KEYS_MAX = 10_000  # about 30 ms of reads at open, then the sweep goes on
_DISCOVERY_STEP_KEYS = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def pack(value: bytes, expire_at_ms: int | None) -> bytes:
    if expire_at_ms is None:
        return b"\x00" + value
    return b"\x01" + _EXPIRY.pack(expire_at_ms) + value


def unpack(envelope: bytes) -> tuple[bytes, int | None]:
    if envelope[:1] == b"\x01":
        return envelope[9:], _EXPIRY.unpack_from(envelope, 1)[0]
    return envelope[1:], None


class KeyValues:
    """String keys over a KVStore, with expiries and a pending-write overlay."""

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self._pending: dict[bytes, bytes | None] = {}
        # What the overlay holds, counted as writes come (an overwrite counts again: an upper
        # bound, reset when the overlay is written or dropped).
        self.pending_size_bytes = 0
        self.writes_count = 0  # puts and deletes ever made: the server tells a batch's writes
        self.held = False  # a worker holds the store's write lock: flush waits (maintenance.py)
        self._record_size_max_bytes = store.log.entry_size_max
        # Live keys that have an expiry -> their expire-at ms: those written since the open,
        # and those found by `discover_expiring`, which the expiry sweep calls a bounded
        # number of keys at a time (the open used to read every value of the store here, a
        # pass over the whole KV log on the event loop: seconds at 300k keys). Until the
        # discovery is over DBSIZE may count keys that expired before the restart, as Redis
        # counts expired keys its sweep has not reached yet; reads never show them.
        self.expires: dict[bytes, int] = {}
        self.discovery_cursor: int | None = 0  # None: every key was looked at
        # A small store is looked at whole before serving (DBSIZE exact from the start, as
        # before), at a bounded cost: a bigger one goes on in the sweep's rounds.
        looked_at = 0
        while self.discovery_cursor is not None and looked_at < _DISCOVERY_AT_OPEN_KEYS_MAX:
            looked_at += self.discover_expiring(_DISCOVERY_STEP_KEYS)

    def adopt(self, other: KeyValues) -> None:
        """Takes `other`'s store and expiries (a reload of the committed state, recovery.py);
        pending writes are dropped."""
        self.store = other.store
        self.expires = other.expires
        self._record_size_max_bytes = other.store.log.entry_size_max
        self.discard_pending()

    def discard_pending(self) -> None:
        """Forgets the writes not yet given to the store (their commit failed)."""
        self._pending.clear()
        self.pending_size_bytes = 0

    def get(self, key: bytes, now: int | None = None) -> tuple[bytes, int | None] | None:
        """The live value of `key` and its expire-at ms (None: no expiry), or None. (The
        commonest read of the server: `unpack` is inlined for a value without expiry.)"""
        pending = self._pending
        envelope = pending[key] if key in pending else self.store.get(key)
        if envelope is None:
            return None
        if envelope[:1] != b"\x01":
            return envelope[1:], None
        value, expire_at_ms = envelope[9:], _EXPIRY.unpack_from(envelope, 1)[0]
        if expire_at_ms <= (now_ms() if now is None else now):
            return None
        return value, expire_at_ms

    def exists(self, key: bytes) -> bool:
        return self.get(key) is not None

    def put(self, key: bytes, value: bytes, expire_at_ms: int | None = None) -> None:
        """Refuses (StreamError, an error reply) a key and value too big for one log record
        before anything changes: pending writes of many connections share one write_batch,
        which must not fail for one of them."""
        envelope = b"\x00" + value if expire_at_ms is None else pack(value, expire_at_ms)
        size = RECORD_HEADER_SIZE_BYTES + OP_HEADER_SIZE_BYTES + len(key) + len(envelope)
        if size > self._record_size_max_bytes:
            raise StreamError(f"ERR string of {size} bytes exceeds the log's entry_size_max "
                              f"({self._record_size_max_bytes})")
        self.writes_count += 1
        self._pending[key] = envelope
        self.pending_size_bytes += len(key) + len(envelope)
        if expire_at_ms is None:
            self.expires.pop(key, None)
        else:
            self.expires[key] = expire_at_ms

    def delete(self, key: bytes) -> None:
        """Deletes the key (a tombstone even if it is already gone: cheap and harmless)."""
        self.writes_count += 1
        self._pending[key] = None
        self.pending_size_bytes += len(key)
        self.expires.pop(key, None)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def flush(self) -> bool:
        """Writes the overlay to the store (not committed); True if there was anything. While
        `held` the overlay stays, and True says a commit is due for it all the same: the KV
        committer is held too, and its first commit after the checkpoint flushes first."""
        if not self._pending:
            return False
        if self.held:
            return True
        items = list(self._pending.items())
        self._pending.clear()
        self.pending_size_bytes = 0
        # One write_batch is atomic; an MSET of more keys than one batch holds is split.
        for start in range(0, len(items), _BATCH_KEYS_MAX):
            self.store.write_batch(items[start:start + _BATCH_KEYS_MAX], commit=False)
        return True

    def count(self, now: int) -> int:
        """Live keys, expired ones excluded."""
        live = len(self.store)
        for key, envelope in self._pending.items():
            live += (envelope is not None) - (self.store.get(key) is not None)
        return live - sum(1 for at in self.expires.values() if at <= now)

    def discover_expiring(self, keys_count: int) -> int:
        """One step of the pass over the store's keys (KVStore.scan: O(keys_count)) that
        notes the expiries of keys written before the open; returns the keys looked at."""
        if self.discovery_cursor is None:
            return 0
        cursor, keys = self.store.scan(self.discovery_cursor, keys_count)
        for key, envelope in zip(keys, self.store.get_many(keys), strict=True):
            if envelope is not None and envelope[:1] == b"\x01" and key not in self._pending:
                self.expires.setdefault(key, _EXPIRY.unpack_from(envelope, 1)[0])
        self.discovery_cursor = cursor or None
        return len(keys)

    def expired(self, now: int, limit: int) -> list[bytes]:
        found = []
        for key, at in self.expires.items():
            if at <= now:
                found.append(key)
                if len(found) == limit:
                    break
        return found

    def keys(self) -> Iterator[bytes]:
        """Live keys (expired ones included: callers filter). Costs a pass over the KV log
        until kvlayer can walk its index (KVStore.keys)."""
        pending = self._pending
        for key in self.store.keys():
            if key not in pending:
                yield key
        for key, envelope in list(pending.items()):
            if envelope is not None:
                yield key
