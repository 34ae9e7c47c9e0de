"""The writer process of tests/kvlayer/test_kv_follower.py:
`python -m tests.support.children.kv_follow_writer DIR`.

Reads one command per line on stdin and answers one line on stdout (after the command's commit
returned), so the test, in another process, knows which address each write got:
    put KEY VALUE    -> the record's address
    del KEY          -> the tail address after the delete
    many N           -> N puts of m<i % 50> = v<i>, one commit; the tail address after
    compact          -> the tail address after the compaction
    checkpoint       -> the tail address after the checkpoint
"""

from __future__ import annotations

import sys

from kvlayer import KVStore

from ..settings import CRASH_SETTINGS


def main(path: str) -> None:
    store = KVStore.open(path, index_buckets_count_log2=1, **CRASH_SETTINGS)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *words = line.split()
        if command == "put":
            answer = store.put(words[0].encode(), words[1].encode())
        elif command == "del":
            store.delete(words[0].encode())
            answer = store.log.tail_address
        elif command == "many":
            for i in range(int(words[0])):
                store.put(b"m%d" % (i % 50), b"v%d" % i, commit=False)
            store.commit()
            answer = store.log.tail_address
        elif command == "compact":
            store.compact()
            answer = store.log.tail_address
        elif command == "checkpoint":
            store.checkpoint()
            answer = store.log.tail_address
        else:
            raise SystemExit(f"unknown command {command!r}")
        print(answer, flush=True)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
