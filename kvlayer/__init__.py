"""kvlayer: a durable key-value store whose writes are records in a FasterLog.

    from kvlayer import KVStore
    with KVStore.open("state") as store:
        store.put(b"user:1", b"alice")
        store.get(b"user:1")        # b"alice"

The log is the source of truth and the C hash index (fasterlog/csrc/fl_index.c) is derived
from it: opening a store loads the newest valid checkpoint and replays the rest of the log.
Modules: store.py (KVStore), checkpoint.py (snapshots, markers, the cookie), compaction.py
(copy forward, truncate), follower.py (read-only followers, checkpoints by time), cli.py
(`fasterlog kv`, loaded only by that command).
Depends on fasterlog only (the layers are fasterlog <- consumers <- kvlayer).
"""

from . import errors
from .errors import KeyNotFound, KVError
from .store import KVStore, key_hash

__all__ = ["KVError", "KVStore", "KeyNotFound", "errors", "key_hash"]
