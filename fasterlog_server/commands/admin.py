"""Administration and durability: COMMAND, INFO, CONFIG, WAITAOF, WAIT, KV.CHECKPOINT,
LOG.TRUNCATE, LOG.COMMIT, LOG.INFO.

WAITAOF answers [1, 0] after the batch's commit of both logs (forced with fsync everysec);
WAIT answers 0 (no replicas); both wait out their timeout when asked for replicas. The LOG.*
and KV.* commands are fasterlog's own: the log's positions, its truncation, and its group
commit counters.
"""

from __future__ import annotations

from typing import Any

from .. import glob, resp
from ..context import Blocked, ServerContext, answered_later
from ..errors import CommandError
from ..maintenance import fenced_reply
from ..session import Client
from .base import REDIS_VERSION, arity, integer


def command(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    sub = arguments[1].upper() if len(arguments) > 1 else b""
    if sub == b"COUNT":
        return len(context.commands)
    if sub == b"DOCS":
        return resp.Map()
    if sub == b"INFO":
        return [None for _ in arguments[2:]]
    return []


def info(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    state = context.log
    lines = [b"# Server", b"redis_version:" + REDIS_VERSION, b"fasterlog_version:0.1.0",
             b"", b"# Clients", b"maxclients:%d" % context.settings.maxclients,
             b"", b"# Persistence", b"aof_enabled:1",
             b"fasterlog_committed_until:%d" % state.committed_until_address,
             b"", b"# Keyspace", b"db0:keys=%d,expires=0,avg_ttl=0" % len(context.streams.streams)]
    return b"\r\n".join(lines) + b"\r\n"


def config(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 3)
    if arguments[1].upper() != b"GET":
        raise CommandError(f"ERR CONFIG {arguments[1].decode(errors='replace')} is not supported")
    values = config_values(context)
    found = resp.Map()
    for pattern in arguments[2:]:
        lowered = pattern.lower()  # Redis matches names case-blind
        if not any(byte in b"*?[\\" for byte in lowered):
            # A plain name is looked up, and answered under the spelling asked (Redis 7.0).
            if lowered in values:
                found[pattern] = values[lowered]
            continue
        tokens = glob.compile_pattern(lowered)
        for key, value in values.items():
            if glob.matches(tokens, key):
                found[key] = value
    return found


def config_values(context: ServerContext) -> dict[bytes, bytes]:
    """What CONFIG GET shows: Redis's names for what we have in Redis's form (a tool that reads
    maxclients or the buffer limits gets our bounds), then ours, under `fasterlog-` names that
    cannot meet a future Redis one."""
    settings, limits = context.settings, context.settings.limits
    ours = {
        "pipeline-depth-max": settings.pipeline_depth_max,
        "commands-per-step-max": settings.commands_per_step_max,
        "multi-queue-count-max": settings.multi_queue_count_max,
        "multi-queue-size-max-bytes": settings.multi_queue_size_max_bytes,
        "request-timeout-ms": round(settings.request_timeout_s * 1000),
        "client-buffers-size-max-bytes": settings.client_buffers_size_max_bytes,
        "kv-checkpoint-bytes": settings.kv_checkpoint_bytes,
        "arguments-count-max": limits.arguments_count_max,
    }
    return {
        b"save": b"", b"appendonly": b"yes",
        b"appendfsync": settings.fsync.encode(),  # "always" or "everysec"
        b"maxclients": b"%d" % settings.maxclients,
        b"timeout": b"0",  # no idle timeout: only a half-sent request times out (ours)
        b"proto-max-bulk-len": b"%d" % limits.bulk_size_max_bytes,
        b"client-query-buffer-limit": b"%d" % limits.query_buffer_size_max_bytes,
        # Ours is one hard limit per client; replicas and pub/sub keep Redis's defaults.
        b"client-output-buffer-limit": b"normal %d 0 0 slave 268435456 67108864 60 "
                                       b"pubsub 33554432 8388608 60"
                                       % settings.output_buffer_size_max_bytes,
        **{b"fasterlog-" + name.encode(): b"%d" % value for name, value in ours.items()},
    }


def waitaof(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """[local syncs, replica syncs] once this connection's writes are in a synced commit: the
    reply goes out after the batch's commit of both logs (forced even with fsync everysec)."""
    numlocal, numreplicas, timeout_ms = (integer(a) for a in arguments[1:4])
    if numlocal < 0 or numreplicas < 0:
        raise CommandError("ERR value is out of range, must be positive")
    if timeout_ms < 0:
        raise CommandError("ERR timeout is negative")
    client.sync_required = True
    if numreplicas > 0 or numlocal > 1:  # never reached: wait out the timeout, as Redis does
        return Blocked([], timeout_ms, lambda: None, timeout_reply=[1, 0])
    return [1, 0]


def wait(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    numreplicas, timeout_ms = integer(arguments[1]), integer(arguments[2])
    if timeout_ms < 0:
        raise CommandError("ERR timeout is negative")
    if numreplicas > 0:
        return Blocked([], timeout_ms, lambda: None, timeout_reply=0)
    return 0


def kv_checkpoint(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Checkpoints the KV index (kvlayer); answers the log position it covers. The checkpoint
    runs in a worker thread (maintenance.py): other clients are served meanwhile, this
    connection's later commands wait for its reply. Refused inside MULTI (dispatch.py rule
    2): it commits the KV log."""
    if context.fence.active:
        return fenced_reply("KV.CHECKPOINT")
    return answered_later(context.maintenance.kv_checkpoint)


def log_truncate(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Moves the stream log's begin to ADDRESS, after restating the state that lives below it
    (maintenance.py, `Maintenance.truncate`): the commits and the segment deletion run in a
    worker thread, as KV.CHECKPOINT's work does. Refused inside MULTI (dispatch.py rule 2):
    it commits the stream log."""
    address = integer(arguments[1])
    if not 0 <= address <= context.log.committed_until_address:
        raise CommandError("ERR LOG.TRUNCATE address must be a committed address")
    if context.log.fenced:
        return fenced_reply("LOG.TRUNCATE")
    return answered_later(lambda: context.maintenance.truncate(address))


def log_commit(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    client.sync_required = True  # the batch's commit of both logs below is the answer
    context.streams.flush()
    return context.log.tail_address


def log_info(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    log = context.log
    store, maintenance = context.kv.store, context.maintenance
    checkpoints = store.checkpoints
    # The KV view's checkpoints: the open's (0: it replayed the whole KV log) and the newest,
    # and how many this server made (automatic ones among them: maintenance.py rule 4).
    kv_checkpoints = {
        b"kv_recovered_from": 0 if store.recovered_from is None else
        store.recovered_from.position,
        b"kv_checkpoint_position": checkpoints[0].position if checkpoints else 0,
        b"kv_checkpoints_count": maintenance.checkpoints_count,
        b"kv_automatic_checkpoints_count": maintenance.automatic_checkpoints_count}
    return resp.Map({b"begin_address": log.begin_address, b"tail_address": log.tail_address,
                     b"committed_until_address": log.committed_until_address,
                     b"io_backend": log.io_backend.encode(),
                     # Group commit at work: syncs run vs replies they answered, per log.
                     **{b"%s_%s" % (name, field): value
                        for name, committer in ((b"log", context.coordinator.stream_committer),
                                                (b"kv", context.coordinator.kv_committer))
                        for field, value in ((b"commits", committer.commits_count),
                                             (b"commit_requests", committer.requests_count),
                                             (b"commit_time_us",
                                              int(committer.commit_seconds_total * 1e6)))},
                     **kv_checkpoints})
