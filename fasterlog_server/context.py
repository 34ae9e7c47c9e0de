"""What a command runs with: the state every connection shares (`ServerContext`), the shape of
a command table entry (`CommandSpec`, `Lane`), and `Blocked`, a command's "nothing yet: may I
wait?".

Rules:
1. Two logs (rule 7 of server.py): streams and consumer groups in the log the server is given
   (streams.py, groups.py), Redis strings in a kvlayer store in its `kv` subdirectory
   (keyvalues.py). Commands change in-memory state at once and leave their records pending;
   the connection asks the commit coordinator (commit.py) for the commits its replies wait for.
2. A handler is a plain function `(context, client, arguments) -> reply`. The reply is a value
   `resp.encode` takes, `Blocked`, or `QUIT` (commands/base.py); an error reply is raised as
   CommandError or StreamError, whose message is the Redis error text.
3. A lane (`Lane.run`) is a handler's fast form for its commonest shape: it returns the encoded
   reply, or None to leave the command to its handler, and has exactly the handler's effects.
   `Lane.log` names the log it writes ("streams" or "kv"), None for a read.
4. The command table (dispatch.COMMANDS) is the only place that names the commands; the
   context carries it for the commands that look commands up (EXEC, COMMAND).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from fasterlog import FasterLog
from kvlayer import KVStore

from . import resp
from .commit import CommitCoordinator, LogName
from .fence import WriteFence
from .groups import GroupStore
from .keyvalues import KeyValues
from .maintenance import Maintenance
from .notify import BlockedReaders, Watches
from .session import Client
from .settings import ServerSettings
from .streams import StreamStore

__all__ = ["BLOCKING", "COMMITTED_READS", "NOT_QUEUED", "NO_AUTH", "NO_MULTI", "READONLY", "WRITE",
           "Blocked", "CommandSpec", "Handler", "Lane", "Reply", "ServerContext",
           "answered_later"]

# A reply before encoding: whatever resp.encode takes, or Blocked, or commands.base.QUIT.
Reply: TypeAlias = Any
Handler: TypeAlias = "Callable[[ServerContext, Client, list[bytes]], Reply]"

# Command flags (CommandSpec.flags), with Redis's names where Redis has the flag.
WRITE = "write"  # may change data
READONLY = "readonly"  # never changes data
BLOCKING = "blocking"  # may wait (BLOCK, WAIT, WAITAOF): returns Blocked
NO_AUTH = "no-auth"  # runs before the client has authenticated
NOT_QUEUED = "not-queued"  # inside MULTI it runs at once instead of being queued
# Refused inside MULTI (making EXEC answer EXECABORT), as Redis refuses SAVE: a command that
# commits a log itself (KV.CHECKPOINT, LOG.TRUNCATE) would commit the transaction's earlier
# writes mid-EXEC, so the transaction would no longer be one atomic batch per log.
NO_MULTI = "no-multi"
COMMITTED_READS = "committed-reads"  # reads only committed entries: a batch commits first


@dataclass(frozen=True, slots=True)
class Lane:
    """A hot lane (rule 3)."""

    run: Callable[[ServerContext, Client, list[bytes]], bytes | None]
    log: LogName | None


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One entry of the command table.

    arity: Redis's, checked before the command runs or is queued by MULTI: n means exactly n
        words, -n at least n; None leaves it to the handler (Redis's arity of those commands
        is looser than their handlers' checks, which run later: at EXEC inside MULTI).
    """

    name: bytes
    handler: Handler
    arity: int | None
    flags: frozenset[str]
    lane: Lane | None = None


@dataclass
class Blocked:
    """A command that found nothing and may wait: `attempt()` returns the reply, or None for
    "still nothing"; `timeout_ms` 0 waits forever. The connection waits for a commit of a
    write to one of `keys` (notify.BlockedReaders) and attempts again.

    `later` (see `answered_later`): a command whose reply is made off the event loop
    (maintenance.py). The connection commits the batch so far, then awaits `later()`, whose
    result is the reply; the client's EOF does not cut that wait (the reply is due, as any
    other), and the connection's later commands wait for it, as after any blocked command."""

    keys: list[bytes]
    timeout_ms: int
    attempt: Callable[[], Reply]
    timeout_reply: Reply = resp.NULL_ARRAY
    later: Callable[[], Awaitable[Reply]] | None = None


def _nothing() -> None:
    return None


def answered_later(later: Callable[[], Awaitable[Reply]]) -> Blocked:
    """The reply of a handler whose work runs off the loop: `later()` starts (or joins) it once
    the batch's earlier commands are committed, and returns the reply."""
    return Blocked([], 0, _nothing, later=later)


class ServerContext:
    """The server's shared state, which every command and connection works on: settings, the
    two logs' stores, WATCH and blocked readers, the commit coordinator, the command table.

    `closing` stops every connection from running more commands (replies already due still
    go out). `xadd_lane_enabled` turns the lone XADD's C lane off (tests compare the paths)."""

    def __init__(self, log: FasterLog, settings: ServerSettings, kv_store: KVStore,
                 commands: Mapping[bytes, CommandSpec]) -> None:
        self.log = log
        self.settings = settings
        self.commands = commands
        self.streams = StreamStore(log, replay=False)
        self.groups = GroupStore(self.streams)  # registers its appliers before the replay
        self.streams.replay()
        self.watches = Watches()
        self.touch = self.watches.touch  # every write calls it (notify.py rule 1)
        self.streams.on_write = self.touch
        self.kv = KeyValues(kv_store)
        self.readers = BlockedReaders()
        self.coordinator = CommitCoordinator(settings.fsync, log, self.streams, self.kv)
        self.closing = False
        self.xadd_lane_enabled = True
        # Set while the logs cannot take writes (fence.py; recovery.py moves it).
        self.fence = WriteFence()
        # KV checkpoints and truncation, off the loop (maintenance.py).
        self.maintenance = Maintenance(self)

    def visible_until_address(self) -> int:
        """Entries below it are shown to XREAD and XREADGROUP (commit.py rule 5)."""
        return self.coordinator.visible_until_address()

    def check_password(self, password: bytes) -> bool:
        """Constant-time comparison with requirepass; False when there is none."""
        expected = (self.settings.requirepass or "").encode()
        return bool(expected) and hmac.compare_digest(password, expected)
