"""The server's settings and limits: every bound on what a client can make it hold or wait
for, each with the reason for its value.

Rules:
1. Every buffer, queue, batch and loop of the server has a named bound, defined here (or, for
   the codec's own bounds, in `resp.RespLimits`, which `ServerSettings.limits` carries; for the
   C fast paths, next to their stack arrays: at most 32 field-value pairs for the lone XADD in
   csrc/xadd_lane.c, 1,024 commands and 8,192 arguments per split in csrc/resp_speedups.c,
   beyond which the Python paths take over, so those bounds cost speed, never correctness).
2. `ServerSettings` holds what a deployment chooses: where to listen, the password, the fsync
   policy, and the bounds a deployment may want to move. The module constants are bounds fixed
   by the design; their values were measured on the machines the README's benchmarks name.
3. Settings are checked when they are made (`ServerSettings.__post_init__`), so a server never
   starts with a setting it would refuse later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import resp

__all__ = [
    "COMMIT_GATHER_ITERATIONS_MAX",
    "COMMIT_GATHER_MAX_S",
    "EVERYSEC_COMMIT_INTERVAL_S",
    "EXPIRE_DISCOVERY_KEYS_MAX",
    "EXPIRE_SWEEP_BACKOFF_MAX_S",
    "EXPIRE_SWEEP_INTERVAL_S",
    "EXPIRE_SWEEP_KEYS_MAX",
    "FENCE_REOPEN_INTERVAL_S",
    "FSYNC_POLICIES",
    "KV_DIRECTORY_NAME",
    "MAXCLIENTS_REPLY",
    "MULTI_QUEUED_ARGUMENT_OVERHEAD_BYTES",
    "NEW_LOG_SEGMENT_SIZE_BYTES",
    "OUTPUT_HIGH_WATER_BYTES",
    "PENDING_ROWS_WHOLE_MAX",
    "READ_SIZE_BYTES",
    "REPLIES_BATCH_SIZE_MAX_BYTES",
    "STEP_OUTPUT_SIZE_MAX_BYTES",
    "STREAMED_REPLY_SIZE_MIN_BYTES",
    "STREAM_CHUNK_SIZE_BYTES",
    "STREAM_ELEMENT_COST_BYTES",
    "STREAM_STEP_SIZE_MAX_BYTES",
    "TRANSPORT_READ_SIZE_MAX_BYTES",
    "ServerSettings",
    "is_loopback",
]

# "always": every write is answered after the group commit that syncs it (the default, and the
# server's promise); "everysec": answered at once and committed every second, as redis-server's
# default, for comparison only (an acknowledged write can be lost).
FSYNC_POLICIES = ("always", "everysec")


def _default_limits() -> resp.RespLimits:
    # A bulk string of 64 MiB, not Redis's 512 MiB: no log entry is that large (entry_size_max
    # is far smaller), and the query buffer, which must hold one such bulk and its framing
    # (RespLimits checks it), can then stay at 256 MiB per client instead of Redis's 1 GiB.
    return resp.RespLimits(bulk_size_max_bytes=64 << 20, query_buffer_size_max_bytes=256 << 20)


@dataclass(frozen=True)
class ServerSettings:
    """What one server listens on and the bounds it keeps.

    host: loopback unless told otherwise; any other address needs `requirepass` (a server
        reachable from other machines must not accept anyone).
    requirepass: the password of Redis's `default` user; None lets every client in.
    fsync: one of FSYNC_POLICIES.
    limits: the RESP codec's bounds per client (see `_default_limits` and resp.RespLimits).
    pipeline_depth_max: commands taken from one client's input per batch. A batch's replies are
        held until its commit, so this bounds the replies held per client; a batch is also at
        most `commands_per_step_max` commands, the smaller bound wins.
    commands_per_step_max: the commands one connection runs in one step of the event loop
        (one callback) before the others are served (connection.py rule 7). Past it, and with
        whole commands still buffered, the rest runs in the loop's next round, and reading
        pauses while READ_SIZE_BYTES are buffered. A batch (whose writes are appended and
        committed together) runs in one step, so a batch is at most this many commands.
        Before this bound a connection ran all it had buffered (one read of 256 KiB, 8,700
        commands) in one step: a PING beside a MULTI flood waited 142-605 ms (p99). 500 was
        measured on this 2-core machine under a load average of 6 (a step of 500 costs about
        1.5 ms of CPU, but a step is what a preempted server is stuck in): PING p99 beside
        floods of 100,000-200,000 commands 26-76 ms with 500, 35-67 ms with 300 (but a SET
        pipeline then commits twice as often and ran up to 2x slower), 46-116 ms with 1,000.
        Pipelines of up to 500 commands (redis-benchmark -P 16, -P 100) keep one batch, and
        so one commit, per round.
    output_buffer_size_max_bytes: a slow reader's unsent replies past which it is disconnected
        (Redis's client-output-buffer-limit): below it the server only stops running the
        client's commands until it reads (OUTPUT_HIGH_WATER_BYTES), and goes on reading what
        it sends (up to the codec's query buffer bound), so a pipeline sent whole before its
        replies are read never waits on both sockets at once.
    maxclients: connections served at once, Redis's name and default. Each connection may hold
        up to the bounds above; past it a new connection gets Redis's reply (MAXCLIENTS_REPLY)
        and is closed at once, as redis-server does.
    multi_queue_count_max, multi_queue_size_max_bytes: the commands one MULTI may queue, and
        their bytes (arguments plus MULTI_QUEUED_ARGUMENT_OVERHEAD_BYTES each, what holding
        them costs). Redis has no such bound (a million queued commands took 485 MB and an
        EXEC of 5.7 s with the loop blocked). Past either, the command is answered with an
        error, the queue is dropped and EXEC answers EXECABORT, as Redis does after any
        command that failed to queue. EXEC runs its whole queue in one step (a transaction is
        one atomic batch, never split): 10,000 commands is 20 steps' worth of
        `commands_per_step_max`, the price of atomicity (RELIABILITY.md, memory_exec_full_queue).
    request_timeout_s: a client whose buffered input holds a half-sent request, and that sent
        nothing for this long, is disconnected (Redis's `timeout` closes any idle client, by
        default never; this one only a request left unfinished: 20 clients that each sent most
        of a 60 MiB bulk and stopped held 1,248 MB for as long as they liked). A client that
        keeps sending is bounded by the next one instead.
    client_buffers_size_max_bytes: the query and output buffers of every client together
        (each is also bounded alone: the codec's query_buffer_size_max_bytes, Redis's
        client-query-buffer-limit, and output_buffer_size_max_bytes). Past it the client that
        holds the most is disconnected, until the total is below it again.
    kv_checkpoint_bytes: the KV log bytes committed since its newest checkpoint past which the
        server checkpoints the KV store by itself, in a worker thread after a KV commit
        (maintenance.py), so a restart after kill -9 restores the index from a recent
        checkpoint and replays at most about this much (a whole replay took 4.1 s at 300k
        keys). 64 MiB replays in well under a second; each checkpoint costs O(keys) (its
        snapshot is a file of 16 bytes per key), so a much smaller bound spends that on every
        few writes. 0 turns automatic checkpoints off (KV.CHECKPOINT and a clean stop still
        make them).
    """

    host: str = "127.0.0.1"
    port: int = 6380
    requirepass: str | None = None
    fsync: str = "always"
    limits: resp.RespLimits = field(default_factory=_default_limits)
    pipeline_depth_max: int = 10_000
    commands_per_step_max: int = 500
    output_buffer_size_max_bytes: int = 64 << 20
    maxclients: int = 10_000
    multi_queue_count_max: int = 10_000
    multi_queue_size_max_bytes: int = 64 << 20
    request_timeout_s: float = 30.0
    client_buffers_size_max_bytes: int = 1 << 30
    kv_checkpoint_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not isinstance(self.request_timeout_s, (int, float)) or \
                isinstance(self.request_timeout_s, bool) or not self.request_timeout_s > 0:
            raise ValueError("request_timeout_s must be a positive number, not "
                             f"{self.request_timeout_s!r}")
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be 'always' or 'everysec', not {self.fsync!r}")
        if not is_loopback(self.host) and not self.requirepass:
            raise ValueError(f"refusing to listen on {self.host}: a non-loopback address "
                             "needs --requirepass")
        for name in ("maxclients", "pipeline_depth_max", "commands_per_step_max",
                     "output_buffer_size_max_bytes",
                     "multi_queue_count_max", "multi_queue_size_max_bytes",
                     "client_buffers_size_max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        value = self.port
        # Checked here, before any file is touched: the socket layer takes a port modulo 2^16,
        # so `serve --port 70000` served on 4464, after creating its logs (issue 15).
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535 (0: a free one), not "
                             f"{value!r}")
        value = self.kv_checkpoint_bytes
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"kv_checkpoint_bytes must be an int >= 0 (0: off), not {value!r}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Redis's exact reply to a connection over maxclients, sent before it is closed.
MAXCLIENTS_REPLY = b"-ERR max number of clients reached\r\n"

# What one queued argument costs beyond its bytes (a bytes object's header and the list slot
# that holds it, on 64-bit CPython), counted against multi_queue_size_max_bytes.
MULTI_QUEUED_ARGUMENT_OVERHEAD_BYTES = 48

# Buffered input past which a connection whose batch is waiting (for its commit, or in a
# blocking read) stops reading from its socket: the kernel's buffers and TCP flow control then
# hold the rest. 64 KiB is one read of the event loop's; the codec's query buffer limit still
# bounds what one client may make us hold. Not while its replies wait for it to read them
# (Connection rule 8): then reading goes on up to that limit less TRANSPORT_READ_SIZE_MAX_BYTES.
READ_SIZE_BYTES = 64 << 10
# The most one read of the event loop's transports hands over (asyncio's selector transports
# read up to 256 KiB at a time). Reading while replies wait (Connection rule 8) stops this far
# below the codec's query_buffer_size_max_bytes, so that bound is never hit as a protocol error.
TRANSPORT_READ_SIZE_MAX_BYTES = 256 << 10
# Unsent replies past which no more of a client's commands run until it reads (back-pressure,
# the transport's high-water mark). The hard limit, past which the client is disconnected, is
# ServerSettings.output_buffer_size_max_bytes.
OUTPUT_HIGH_WATER_BYTES = 64 << 10

# Replies built by one run of a batch before they are written (dispatch.py rule 6): the batch
# goes on once the socket has taken them (below OUTPUT_HIGH_WATER_BYTES), so a pipeline of big
# replies holds about this much plus one reply, not the whole pipeline's replies (a GET
# pipeline of 250 x 4 MB took 1,962 MB). Four high-water marks: a pipeline of small replies
# (10,000 GETs of 20 bytes) is written in one piece.
REPLIES_BATCH_SIZE_MAX_BYTES = 256 << 10
# A reply that grows with the data (MGET, XRANGE, XREVRANGE, XREAD, XREADGROUP, XCLAIM,
# XAUTOCLAIM, XINFO STREAM FULL's entries) becomes a streamed reply
# (streamed.py) once what it read passes this: what comes after is read and encoded as the
# socket drains, so any size goes to a fast reader and a slow one holds about one element. Below
# it a reply is built whole, from one moment's data (an MGET under 1 MiB is atomic). 1 MiB: one
# step of the event loop reads and encodes about that much, so a PING beside an XRANGE pipeline
# of 4 MiB replies waits for 1 MiB of work, not 4 (p99 over 100 ms with 8 MiB, loaded machine).
STREAMED_REPLY_SIZE_MIN_BYTES = 1 << 20
# XPENDING's extended form builds its rows whole up to this many (about 60 bytes each once
# encoded, so about STREAMED_REPLY_SIZE_MIN_BYTES of reply); past it they are built as the
# socket takes them (a row built whole costs about 250 bytes of objects, and a PEL of millions
# answered at once held them all, plus their encoding).
PENDING_ROWS_WHOLE_MAX = STREAMED_REPLY_SIZE_MIN_BYTES // 64
# A streamed reply is written in pieces of at least this many bytes (one element may be more),
# and at most STREAM_STEP_SIZE_MAX_BYTES in one step of the event loop before the others run.
STREAM_CHUNK_SIZE_BYTES = 256 << 10
STREAM_STEP_SIZE_MAX_BYTES = 4 << 20
# The replies (not streamed) one connection writes in one step of the event loop: past it the
# connection yields (Connection rule 7), as a streamed reply does at STREAM_STEP_SIZE_MAX_BYTES.
# A socket that takes everything would otherwise let one step build and write replies up to
# commands_per_step_max of them (500 GETs of 4 MB: 2 GB, seconds of loop).
STEP_OUTPUT_SIZE_MAX_BYTES = 4 << 20
# What one element of a streamed reply counts for, beyond its bytes, in those two bounds: the
# work of making and encoding it (about 5 us, 25 us on a loaded machine), which for small
# elements is most of the work. Without it a step of XPENDING's 50-byte rows was 87,000 rows
# and held the loop 1.6 s; with 2 KiB a step was 2,048 rows, and a PING beside it had a p99 of
# 84 ms (loaded machine); with 8 KiB a step is at most 512 elements (about 13 ms loaded).
STREAM_ELEMENT_COST_BYTES = 8 << 10

# How long a commit with fsync always may wait for more writers (commit.LoopCommitter): loop
# iterations, and time since its first waiter. While every iteration brings new writers one
# sync can answer them all; the bounds cap what the first writer waits for the others (a
# millisecond at most, against a sync of about 130 us), and a lone writer never waits.
COMMIT_GATHER_ITERATIONS_MAX = 8
COMMIT_GATHER_MAX_S = 0.001
# fsync everysec: the commit interval, redis-server's appendfsync everysec.
EVERYSEC_COMMIT_INTERVAL_S = 1.0
# With fsync everysec replies do not wait for commits, so while a KV checkpoint holds the KV
# committer (maintenance.py rule 2) clients' writes would pile up in the overlay for as long as
# it runs: past this many bytes pending there, a batch that wrote KV waits for the commit after
# the checkpoint, as it would with fsync always.
HELD_OVERLAY_SIZE_MAX_BYTES = 64 << 20
# The segment size of the logs a server creates (the stream log, and its KV log sized like
# it). Each segment is preallocated whole and the next one ahead, so the log's 1 GiB default
# made a fresh server need over 2 GiB of free disk to start (issue 14 defect 5); at 64 MiB it
# needs about 256 MiB. Growing segments in steps is issue 15's; a log keeps the size it was
# made with.
NEW_LOG_SEGMENT_SIZE_BYTES = 64 << 20

# The expiry sweep (reads already treat expired keys as missing; the sweep gives the space back
# and keeps DBSIZE's count cheap): how often it runs, and the keys it deletes per round, so one
# round holds the event loop for a bounded time and writes one KV batch of bounded size.
EXPIRE_SWEEP_INTERVAL_S = 0.1
EXPIRE_SWEEP_KEYS_MAX = 1000
# A failed round (fenced log, full disk) doubles the wait before the next, up to this: the
# sweep keeps trying without filling the log file with one error a tick.
EXPIRE_SWEEP_BACKOFF_MAX_S = 5.0
# Keys whose expiries the sweep looks up per round after a start, until it has seen every key
# written before it (keyvalues.KeyValues.discover_expiring): a bounded step on the loop.
EXPIRE_DISCOVERY_KEYS_MAX = 200

# Redis strings live in a kvlayer store in this subdirectory of the stream log's directory.
KV_DIRECTORY_NAME = "kv"

# After a failed write the logs are read-only until they can be reopened as writers
# (recovery.py rule 3): how often a reopen is tried. Each try replays both logs in a worker
# thread, so it is tried only once the file system has room for a new segment (the larger
# segment size of the two logs: what one preallocation takes).
FENCE_REOPEN_INTERVAL_S = 1.0

# LOG.TRUNCATE's restatement (maintenance.py rule 7): at most this many streams, groups,
# consumers or pending entries restated per event-loop step, and the records of one step
# appended before the next (so no batch of 100k records is built): about a millisecond of work.
RESTATE_STEP_ITEMS_MAX = 1000
