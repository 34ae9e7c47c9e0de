"""kvlayer: a durable key-value store whose writes are records in a FasterLog.

    from kvlayer import KVStore
    with KVStore.open("state") as store:
        store.put(b"user:1", b"alice")
        store.get(b"user:1")        # b"alice"

This package holds the KV store: the public KVStore (store.py) over its shared state and
operations (core.py), the record format and key hashing (records.py), the binding of the C hash
index (index.py) and of the C fast path (_fast.py), checkpoints (checkpoint.py: KV snapshots,
markers and the commit cookie, on consumers' checkpoint mechanism), compaction (compaction.py:
copy forward, truncate), read-only followers and timed checkpoints (follower.py), its errors
(errors.py) and the `fasterlog kv` commands (cli.py). The log is the source of truth; the index
is derived from it, rebuilt at open from the newest valid checkpoint and a replay of the rest.
It may import fasterlog and consumers, never a layer above (fasterlog_server, the CLI);
inside it, imports go one way: store -> compaction, follower -> core -> index, records,
checkpoint -> errors.
"""

from fasterlog.build_lookup import find_build

# From a source checkout after a plain `pip install .`: the installed copy's C extension.
__path__ = find_build(__path__, __name__, "_kvlayer_c")

from . import errors
from .errors import KeyNotFound, KVError
from .store import KVStore, key_hash

__all__ = ["KVError", "KVStore", "KeyNotFound", "errors", "key_hash"]
