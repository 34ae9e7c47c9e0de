"""Store adapters: fasterlog and the peers a user would otherwise pick, behind one interface.

The benchmark loops in workloads.py call these methods directly, so each adapter is written as
the code a careful user would write against that store's public API, and its own overhead counts
as part of the store's cost, as it would in the user's program.

Rules:
1. "Durable" means the store's own sync has returned: os.fdatasync for the plain file,
   synchronous=FULL in WAL mode for sqlite3, sync=True for lmdb and for rocksdb, commit() for
   fasterlog. Every store is measured with the same meaning.
2. A store is opened empty for writing, or reopened over what an earlier instance wrote only to
   read it back; no adapter resumes appending to a reopened store.
3. Peer keys are big-endian u64 sequence numbers, so key order is append order and lmdb may use
   its append mode.
4. A store's library is imported when the adapter is constructed, never at module import, so a
   missing peer makes only that peer's cases skip. Each adapter names in `requires` the
   "module.attribute" whose import decides whether the store is available.
5. scan() returns (entries_count, last_entry) with every entry delivered to Python as bytes;
   the caller checks both against what it wrote.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

KEY = struct.Struct(">Q")  # big-endian so the byte order of keys is their numeric order
FILE_FRAME_HEADER = struct.Struct("<II")  # payload length, zlib.crc32 of the payload
FILE_SCAN_CHUNK_BYTES = 4 << 20  # one read() per chunk; large enough that syscalls are noise
LMDB_MAP_SIZE_BYTES = 16 << 30  # address space only: the file grows with the data
SQLITE_BUSY_TIMEOUT_S = 60.0  # producers wait on each other's write lock, never fail on it

ScanResult = tuple[int, Any]  # (entries_count, last entry); callers check it is bytes


class Producer:
    """One producer thread's handle: a durable single append and the release of its resources."""

    def __init__(
        self, append_durable: Callable[[bytes], object], close: Callable[[], None] = lambda: None
    ) -> None:
        self.append_durable = append_durable
        self.close = close


class FasterLogStore:
    """fasterlog with its default settings; hot methods are the log's own bound methods."""

    name = "fasterlog"
    requires = "fasterlog.FasterLog"

    def __init__(self, directory: str) -> None:
        from fasterlog import FasterLog

        self._log = FasterLog.open(os.path.join(directory, "log"))
        # Bound methods of the log itself, so the hot loop pays no adapter call.
        self.append = self._log.append
        self.append_batch = self._log.append_many
        self.commit = self._log.commit

    def describe(self) -> dict[str, Any]:
        import fasterlog

        return {
            "io_backend": self._log.io_backend,
            "settings": dict(self._log.settings),
            "package_directory": os.path.dirname(fasterlog.__file__),
        }

    def append_durable(self, payload: bytes) -> None:
        self._log.append(payload)
        self._log.commit()

    def producer(self) -> Producer:
        # The log is shared by all producers; concurrent commit() calls share syncs (group commit).
        return Producer(self.append_durable)

    def scan(self) -> ScanResult:
        count, entry = 0, None
        for _address, entry in self._log.scan():  # noqa: B007 - the last one is returned
            count += 1
        return count, entry

    def close(self) -> None:
        self._log.close()


class FasterLogBatchesStore(FasterLogStore):
    """fasterlog read back with scan_batches(); it writes exactly as FasterLogStore does."""

    name = "fasterlog-batches"

    def scan(self) -> ScanResult:
        count, last = 0, None
        for batch in self._log.scan_batches():
            count += len(batch)
            last = batch[-1][1]
        return count, last


class FasterLogColumnsStore(FasterLogStore):
    """fasterlog read back with scan_columns(), which this build offers beyond the contract."""

    name = "fasterlog-columns"
    requires = "fasterlog.FasterLog.scan_columns"

    def scan(self) -> ScanResult:
        count, last = 0, None
        for _addresses, entries in self._log.scan_columns():
            count += len(entries)
            last = entries[-1]
        return count, last


class FileStore:
    """A plain file of [u32 length][u32 crc32][payload] frames, os.write then os.fdatasync."""

    name = "file"
    requires = "zlib.crc32"

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, "log")
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._pending = bytearray()  # frames appended since the last commit
        self._lock = threading.Lock()  # producers: one write+fdatasync at a time

    def append(self, payload: bytes) -> None:
        self._pending += FILE_FRAME_HEADER.pack(len(payload), zlib.crc32(payload))
        self._pending += payload

    def append_batch(self, payloads: list[bytes]) -> None:
        pack, crc32 = FILE_FRAME_HEADER.pack, zlib.crc32
        self._pending += b"".join([part for p in payloads for part in (pack(len(p), crc32(p)), p)])

    def commit(self) -> None:
        _write_all(self._fd, self._pending)
        self._pending.clear()
        os.fdatasync(self._fd)

    def append_durable(self, payload: bytes) -> None:
        self.append(payload)
        self.commit()

    def producer(self) -> Producer:
        return Producer(self._append_durable_locked)

    def _append_durable_locked(self, payload: bytes) -> None:
        frame = FILE_FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            _write_all(self._fd, frame)
            os.fdatasync(self._fd)

    def scan(self) -> ScanResult:
        count, last = 0, None
        with open(self._path, "rb", buffering=0) as file:
            for entry in _file_frames(file):
                count += 1
                last = entry
        return count, last

    def close(self) -> None:
        os.close(self._fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    # os.write may write less than asked (a signal, a very large buffer); finish the job.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _file_frames(file: Any) -> Iterator[bytes]:
    """Yield each payload of a frame file, checking its crc as a real reader would."""
    unpack_from, crc32 = FILE_FRAME_HEADER.unpack_from, zlib.crc32
    header_size_bytes = FILE_FRAME_HEADER.size
    carry = b""  # the start of a frame cut by the end of the previous chunk
    while chunk := file.read(FILE_SCAN_CHUNK_BYTES):
        buffer = carry + chunk if carry else chunk
        offset, end = 0, len(buffer)
        while offset + header_size_bytes <= end:
            length, crc = unpack_from(buffer, offset)
            stop = offset + header_size_bytes + length
            if stop > end:
                break
            payload = buffer[offset + header_size_bytes : stop]
            if crc32(payload) != crc:
                raise ValueError(
                    f"file scan failed: crc mismatch in frame at chunk offset {offset}"
                )
            yield payload
            offset = stop
        carry = buffer[offset:]
    if carry:
        raise ValueError(f"file scan failed: {len(carry)} bytes of a torn frame at the end")


class SqliteStore:
    """sqlite3 in WAL mode with synchronous=FULL: one row per entry, rowid as the address."""

    name = "sqlite"
    requires = "sqlite3.connect"
    _insert_sql = "INSERT INTO log(data) VALUES (?)"

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, "db")
        self._connection = self._connect()
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
        )
        self._connection.commit()
        self._cursor = self._connection.cursor()

    def _connect(self) -> Any:
        import sqlite3

        # Python's default isolation opens a transaction at the first INSERT; commit() ends it.
        connection = sqlite3.connect(
            self._path, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def append(self, payload: bytes) -> None:
        self._cursor.execute(self._insert_sql, (payload,))

    def append_batch(self, payloads: list[bytes]) -> None:
        self._cursor.executemany(self._insert_sql, zip(payloads))

    def commit(self) -> None:
        self._connection.commit()

    def append_durable(self, payload: bytes) -> None:
        self.append(payload)
        self.commit()

    def producer(self) -> Producer:
        # One connection per thread, as sqlite3 users are told to do.
        connection = self._connect()

        def append_durable(payload: bytes) -> None:
            connection.execute(self._insert_sql, (payload,))
            connection.commit()

        return Producer(append_durable, connection.close)

    def scan(self) -> ScanResult:
        count, last = 0, None
        rows = self._connection.execute("SELECT id, data FROM log ORDER BY id")
        for _id, last in rows:  # noqa: B007 - the last one is returned
            count += 1
        return count, last

    def close(self) -> None:
        self._connection.close()


class LmdbStore:
    """lmdb with sync=True: put(append=True) under one write transaction per commit."""

    name = "lmdb"
    requires = "lmdb.open"

    def __init__(self, directory: str) -> None:
        import lmdb

        self._env = lmdb.open(directory, map_size=LMDB_MAP_SIZE_BYTES, sync=True, metasync=True)
        self._transaction: Any = None  # the open write transaction, begun by the first append
        self._key_index_next = 0

    def append(self, payload: bytes) -> None:
        if self._transaction is None:
            self._transaction = self._env.begin(write=True)
        self._transaction.put(KEY.pack(self._key_index_next), payload, append=True)
        self._key_index_next += 1

    def append_batch(self, payloads: list[bytes]) -> None:
        if self._transaction is None:
            self._transaction = self._env.begin(write=True)
        first = self._key_index_next
        keys = [KEY.pack(index) for index in range(first, first + len(payloads))]
        self._transaction.cursor().putmulti(zip(keys, payloads, strict=True), append=True)
        self._key_index_next += len(payloads)

    def commit(self) -> None:
        if self._transaction is not None:
            self._transaction.commit()
            self._transaction = None

    def append_durable(self, payload: bytes) -> None:
        # lmdb admits one write transaction at a time, so the key counter needs no other lock.
        with self._env.begin(write=True) as transaction:
            transaction.put(KEY.pack(self._key_index_next), payload, append=True)
            self._key_index_next += 1

    def producer(self) -> Producer:
        return Producer(self.append_durable)

    def scan(self) -> ScanResult:
        count, last = 0, None
        with self._env.begin() as transaction:
            for _key, last in transaction.cursor():  # noqa: B007 - the last one is returned
                count += 1
        return count, last

    def close(self) -> None:
        self.commit()
        self._env.close()


class RocksStore:
    """rocksdb through rocksdict: a WriteBatch per commit written with sync=True."""

    name = "rocksdb"
    requires = "rocksdict.Rdict"

    def __init__(self, directory: str) -> None:
        from rocksdict import Options, Rdict, WriteBatch, WriteOptions

        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(directory, options)
        self._write_options = WriteOptions()
        self._write_options.sync = True
        self._new_batch: Callable[[], Any] = lambda: WriteBatch(raw_mode=True)
        self._batch = self._new_batch()
        self._key_indexes = itertools.count()  # next() is atomic under the GIL: producers share it

    def append(self, payload: bytes) -> None:
        self._batch.put(KEY.pack(next(self._key_indexes)), payload)

    def append_batch(self, payloads: list[bytes]) -> None:
        # rocksdict has no bulk put; a WriteBatch filled in a loop is its batch API.
        put, pack, key_indexes = self._batch.put, KEY.pack, self._key_indexes
        for payload in payloads:
            put(pack(next(key_indexes)), payload)

    def commit(self) -> None:
        self._db.write(self._batch, self._write_options)  # consumes the batch
        self._batch = self._new_batch()

    def append_durable(self, payload: bytes) -> None:
        self._db.put(KEY.pack(next(self._key_indexes)), payload, self._write_options)

    def producer(self) -> Producer:
        return Producer(self.append_durable)

    def scan(self) -> ScanResult:
        count, last = 0, None
        for last in self._db.values():  # noqa: B007 - the last one is returned
            count += 1
        return count, last

    def close(self) -> None:
        self._db.close()


STORES: dict[str, Any] = {
    store.name: store
    for store in (
        FasterLogStore,
        FasterLogBatchesStore,
        FasterLogColumnsStore,
        FileStore,
        SqliteStore,
        LmdbStore,
        RocksStore,
    )
}
