"""Compaction: copy the live records below an address forward, then truncate the log there.

`KVStore.compact(until_address)` frees the disk space of overwritten and deleted values. Nothing
new goes into the log format: a copy is an ordinary put of the key's current value (a KV record
as FORMAT.md describes, linked to its chain's head like any write, so store.py rule 2 holds),
and the truncation is the log's own truncate_until.

The steps, in this order (each one durable before the next starts):
1. Commit whatever the writer appended, and pick U: `until_address` rounded down to a page
   start, at most committed-until (None: committed-until, i.e. everything). Named cursors are
   checked first (RetentionError unless force=True), as truncate_until does.
2. Scan [begin, U), taking the write lock for up to 512 records at a time. For each put among
   them, find the key's chain head in the index (and walk the chain from it unless the head is
   this very record): if this record holds the key's newest operation, the key is live and its
   newest record lies below U, so put the value again. Commit those copies. Writers and
   readers run between chunks; a user write that lands after a copy is simply newer.
3. Checkpoint (at a position P >= U, after every copy).
4. truncate_until(U), raise the writer's chain floor to U (store.py rule 6), drop the kept
   checkpoints positioned below U, and commit: the new begin and the cookie are durable in that
   commit, and the log deletes the segment files wholly below U. Then the dropped checkpoints'
   snapshot files are deleted.

Why a crash at any point recovers the same state:
- during or after step 2: the copies are puts of values the keys already had; a committed copy
  changes nothing a reader sees, and a torn batch of copies is cut like any uncommitted write;
- after step 3, before step 4's commit: the log still begins at the old begin; recovery loads
  the checkpoint P (or an older one) and replays as usual;
- after step 4's commit: recovery loads checkpoint P (P >= U, the cookie names it) and replays
  from P, never below U. Its snapshot may name tombstones below U: restored chain heads below
  the floor end the walk at once (rule 6), and later checkpoints drop such entries. If P's
  snapshot is unusable, the older checkpoints are below U and are skipped, and the full replay
  from U is still right: every key live at U has its newest record at or above U (the copies),
  and walks stop at the floor instead of reading the truncated part.
- A reader in the writer process that was walking a chain through a record below U when the
  truncation landed gets TruncatedError inside the store and retries from the index, which
  already points at the copies (step 2 precedes step 4). Followers: follower.py, rules 3-4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._kvlayer_c import lib
from .checkpoint import Checkpoint
from .core import StoreCore
from .errors import StoreSettingsError
from .records import OP_PUT, SINGLE, decode_record, single_op

__all__ = ["CompactionResult", "compact"]

copies_per_batch_max = 4096  # keys put again per write_batch (its limit is 65535)
# Records examined per hold of the write lock: bounds how long a writer waits for compaction
# (about 10 ms here), not how much it copies.
records_per_lock_max = 512
# Tests set this to a function of the step name to kill the process at that point
# (tests/kv_kill.py): "after-copies", "after-checkpoint", "after-truncate", "after-commit".
_test_hook: Callable[[str], None] | None = None


def _reached(point: str) -> None:
    if _test_hook is not None:
        _test_hook(point)


class CompactionResult(NamedTuple):
    begin_before_address: int  # where the log began before
    until_address: int         # where it begins now (U)
    records_scanned_count: int
    keys_copied_count: int
    bytes_copied: int          # key and value bytes put again
    checkpoint: Checkpoint | None  # the checkpoint taken after the copies (None: nothing done)


def _choose_until(log_page_size_bytes: int, until_address: int | None, committed: int) -> int:
    if until_address is None:
        return committed
    if not isinstance(until_address, int) or isinstance(until_address, bool) or (
            until_address < 0):
        raise StoreSettingsError(f"compact failed: until_address must be a non-negative int "
                                 f"or None, not {until_address!r}")
    if until_address >= committed:
        return committed
    # truncate_until takes an entry start, a page start or committed-until: a page start is
    # the one any address can be rounded to without reading the log.
    return until_address - until_address % log_page_size_bytes


def _newest_address(store: StoreCore, key: bytes, hash_: int, head: int) -> int:
    """The address of the record holding the newest operation on `key`, or 0 (the walk of
    StoreCore.value_from from the chain head `head`, returning where instead of what). Write
    lock held."""
    address = head
    read = store.log.read
    while address >= store.chain_floor:
        payload = read(address)
        single = single_op(payload, address)
        if single is not None:
            previous, _, key_size, op_hash = single
            if op_hash == hash_ and payload[SINGLE.size:SINGLE.size + key_size] == key:
                return address
            address = previous
            continue
        _, previous, ops = decode_record(payload, address)
        if any(op.hash == hash_ and op.key == key for op in ops):
            return address
        address = previous
    return 0


def _copy_live(store: StoreCore, addresses: list[int],
               payloads: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """Step 2 for some records, write lock held: puts again, and commits, every put among them
    that is its key's newest operation; returns the (key, value) pairs put."""
    find = store.index.find
    copies: dict[bytes, bytes] = {}
    for address, payload in zip(addresses, payloads, strict=True):
        single = single_op(payload, address)
        if single is not None:  # the common record, without Op objects
            _, kind, key_size, hash_ = single
            if kind != OP_PUT:
                continue
            head = find(hash_)
            key = payload[SINGLE.size:SINGLE.size + key_size]
            # The chain's head is its newest record, so a record that is the head holds the
            # newest operation on each of its keys: no walk needed.
            if head == address or _newest_address(store, key, hash_, head) == address:
                copies[key] = payload[SINGLE.size + key_size:]
            continue
        for op in decode_record(payload, address)[2]:
            if op.kind != OP_PUT:
                continue
            head = find(op.hash)
            if head == address or _newest_address(store, op.key, op.hash, head) == address:
                copies[op.key] = op.value
    pairs = list(copies.items())
    for start in range(0, len(pairs), copies_per_batch_max):
        store.write_checked(dict(pairs[start:start + copies_per_batch_max]), "compact",
                            commit=False)
    if pairs:
        store.commit_locked()
    return pairs


def compact(store: StoreCore, until_address: int | None, *, force: bool = False,
            progress: Callable[[int, int], None] | None = None) -> CompactionResult:
    """The steps of the module docstring; see KVStore.compact."""
    log = store.log
    with store.write_lock:
        store.check_open("compact")
        store.check_writable("compact")
        store.commit_locked()  # step 1
        begin = log.begin_address
        committed = log.committed_until_address
    until = _choose_until(log.settings["page_size_bytes"], until_address, committed)
    if until <= max(begin, lib.FL_FIRST_ADDRESS):
        return CompactionResult(begin, begin, 0, 0, 0, None)
    if not force:
        log.check_retention(until)  # the log's own check, before any work is done
    total = until - begin
    scanned = copied = copied_bytes = 0
    for chunk_addresses, chunk_payloads in log.scan_columns(begin, until):  # step 2
        for first in range(0, len(chunk_addresses), records_per_lock_max):
            addresses = chunk_addresses[first:first + records_per_lock_max]
            payloads = chunk_payloads[first:first + records_per_lock_max]
            with store.write_lock:
                store.check_open("compact")
                pairs = _copy_live(store, addresses, payloads)
            scanned += len(addresses)
            copied += len(pairs)
            copied_bytes += sum(len(key) + len(value) for key, value in pairs)
            if progress is not None:
                progress(addresses[-1] - begin, total)
    _reached("after-copies")
    with store.write_lock:
        store.check_open("compact")
        if store.base is None or store.base.position < until:
            # checkpoint() returns the last checkpoint when nothing was written since; that one
            # would be below U, so a new one is asked for.
            store.bytes_since_checkpoint = max(store.bytes_since_checkpoint, 1)
        made = store.checkpoint()  # step 3
        assert made.position >= until, (made, until)
        _reached("after-checkpoint")
        # The floor goes up before the truncation (store rule 6): the copies are in the index,
        # so no live key's newest record is below it, and a reader that loaded the old floor
        # and then reads a truncated record retries with this one.
        store.chain_floor = max(store.chain_floor, until)
        log.truncate_until(until, force=force)  # step 4
        store.checkpoints = [kept for kept in store.checkpoints if kept.position >= until]
        _reached("after-truncate")
        store.commit_locked()
        _reached("after-commit")
        # The snapshots of the dropped checkpoints: no committed cookie names them any more.
        store.remove_unkept_snapshots()
    if progress is not None:
        progress(total, total)
    return CompactionResult(begin, until, scanned, copied, copied_bytes, made)
