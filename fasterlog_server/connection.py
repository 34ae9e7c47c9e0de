"""One client connection: a state machine fed with the client's bytes, which answers through a
sink; `ConnectionProtocol`, the asyncio adapter that turns transport callbacks into its events;
and `Connections`, the registry that enforces maxclients.

States, after h11: three named state variables, each changed only through its transition
table. `_transition` applies the tables and refuses (LocalProtocolError: our own bug) an event
a state does not allow; the commonest write's two transitions (HOLD in `_answer_write`, DONE in
`commit_done`) look the same table up inline, where a call would cost more than the rest of
that step (a bad event there fails as a KeyError):

    state (the batch)   READY --HOLD--> AWAITING_COMMIT --DONE--> READY
                        READY --CONTINUE--> CONTINUING --DONE--> READY
                        CONTINUING --BLOCK--> BLOCKED --UNBLOCK--> CONTINUING
                        (BLOCKED --DONE--> READY: a blocked read cancelled)
                        READY --STREAM--> STREAMING --DONE--> READY
                        READY --YIELD--> YIELDED --RESUME--> READY
                        any --CLOSE--> CLOSED, which absorbs every later event
    input               OPEN <--READING_PAUSED / READING_RESUMED--> PAUSED; --INPUT_ENDED--> ENDED
    output              OPEN <--WRITING_PAUSED / WRITING_RESUMED--> PAUSED

READY: no batch in flight. Commands run inside `receive`, as their bytes arrive, so a read is
    answered without a task switch; the commonest requests take their hot lane (dispatch.py
    rule 3) without the bookkeeping of batches of any shape.
AWAITING_COMMIT: the batch's replies are held until every commit it enlisted with has called
    `commit_done` (callbacks: no task, no future).
CONTINUING: the batch goes on in a task: it commits before a read that must see its writes,
    or before and after a blocking read, or a command answered later (KV.CHECKPOINT,
    LOG.TRUNCATE: their work runs off the loop, maintenance.py).
BLOCKED: that task waits in a blocking read; the client's EOF ends it at once (as in Redis).
STREAMING: a streamed reply (streamed.py) goes out piece by piece while the socket takes it
    (output OPEN), at most STREAM_STEP_SIZE_MAX_BYTES per step of the event loop; the rest of
    the batch (`_rest`) and later input wait for its end.
YIELDED: this step of the event loop ran `commands_per_step_max` commands and more are
    buffered (rule 7): the rest runs in the loop's next round (`_step_on`), after the other
    connections' callbacks.
CLOSED: the transport is closed or closing: nothing more runs or is written. A commit may
    still end afterwards: its bookkeeping runs (blocked readers of the keys it wrote wake).
Input PAUSED: we stopped reading because READ_SIZE_BYTES are buffered (with output PAUSED, the
    bound of rule 8). Input ENDED: the client
    half-closed; its commands are answered, then the connection closes. Output PAUSED: the
    transport's buffer is over its high-water mark; no command runs until it drains.

Rules:
1. Commands run only in state READY with output OPEN; otherwise input is only buffered (and
   past READ_SIZE_BYTES reading pauses), so replies keep their order and a connection never
   has two batches in flight.
2. A connection's replies are written in the order of its commands. The replies of a batch
   that wrote wait for its commits (commit.py); those of a batch that wrote nothing go at once.
   When a commit fails, each reply it covered is the error (`_failed_replies`: one per
   command, so the client stays in step) and the connection stays open.
3. Output is bounded by counting replies as they are built (dispatch.py rule 6): a batch stops
   once its replies reach REPLIES_BATCH_SIZE_MAX_BYTES and its rest (`_rest`) runs only once
   the socket has taken them (output OPEN); a reply that grows with the data is streamed
   (STREAMING). So a client, fast or slow, makes the server hold about the high-water mark,
   one batch's replies and one reply (or one element of a streamed one), and a fast reader
   gets a reply of any size. `output_buffer_size_max_bytes` is the hard limit on what the
   transport holds beyond what the socket took: a reply that takes it past (one built whole,
   EXEC's say) disconnects the client, as Redis's client-output-buffer-limit does.
4. A malformed frame gets -ERR and a closed connection; no input crashes the server.
5. Past `maxclients` open connections a new one gets Redis's reply and is closed at once.
6. Every connection's buffers together (its codec's input and its transport's unsent output,
   counted when they change) stay within `client_buffers_size_max_bytes`: past it the biggest
   holder is disconnected (Connections.count_buffers). A half-sent request left for
   `request_timeout_s` without a byte disconnects its client (`_request_timed_out`).
7. One step of the event loop (one callback: a read, a commit's answer, a drained socket)
   runs at most `commands_per_step_max` of a connection's commands; with whole commands still
   buffered past it the connection YIELDS and goes on in the loop's next round, so a PING
   from another client waits for one step, not for a flood (a pipeline of 200,000 commands,
   100,000 commands queued by MULTI). A batch runs whole in one step (its writes are appended
   and committed together, commit.py): a batch is at most that many commands, and a batch's
   rest (`_rest`) runs only in a step with room for all of it. EXEC is one command that runs
   its whole queue (one atomic batch per log, never split: multi_queue_count_max bounds it).
   A step also ends once it has written STEP_OUTPUT_SIZE_MAX_BYTES of replies: a reader that
   takes all it is sent (a pipeline of 250 GETs of 4 MB) held the loop for 800 ms otherwise.
   While YIELDED, input is only buffered and reading pauses past READ_SIZE_BYTES, so what a
   flooding client makes the server hold stays within the bounds of rule 1 and rule 6.

8. While output is PAUSED, input is still read, up to the codec's query buffer bound less
   one transport read (`_input_held_size_max_bytes`), not READ_SIZE_BYTES: a client that sends
   a whole pipeline before it reads a reply (redis-py's pipelines, as redis-server allows)
   would otherwise wait on its full socket while we wait for it to read, forever (100,000
   XRANGEs, 50 MB of replies, hung). Commands still do not run (rule 1), so what the client
   makes us hold is its input, bounded here and by rule 6, and the high-water mark of output.

Sans-IO: the machine touches no socket. It writes to a `Sink` (what it needs of an
asyncio.Transport) and is driven by its event methods (`attach`, `receive`, `input_ended`,
`writing_paused`, `writing_resumed`, `lost`, and `commit_done` from the committers); the
adapter only maps transport callbacks to them. It does use the running event loop for what it
waits on (its commits, blocking reads, the next round after a YIELD).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Iterator
from typing import Protocol, cast

from . import resp
from .commit import CommitCoordinator, Committer
from .context import Blocked, Reply, ServerContext
from .dispatch import LANES, OUTPUT_FULL, run_sync
from .errors import CommandError, LocalProtocolError, RemoteProtocolError
from .session import Client
from .settings import (
    MAXCLIENTS_REPLY,
    OUTPUT_HIGH_WATER_BYTES,
    READ_SIZE_BYTES,
    STEP_OUTPUT_SIZE_MAX_BYTES,
    STREAM_CHUNK_SIZE_BYTES,
    STREAM_STEP_SIZE_MAX_BYTES,
    TRANSPORT_READ_SIZE_MAX_BYTES,
)
from .streamed import Streamed
from .streams import StreamError

__all__ = ["Connection", "ConnectionProtocol", "Connections", "Event", "Flow", "Sink", "State"]

_logger = logging.getLogger("fasterlog.service")


class State(enum.IntEnum):  # IntEnum: hashed in C, as the tables below look them up per event
    READY = 0
    AWAITING_COMMIT = 1
    CONTINUING = 2
    BLOCKED = 3
    STREAMING = 4
    YIELDED = 5
    CLOSED = 6


class Flow(enum.IntEnum):
    """The state of the input, and of the output (which never ENDS: CLOSED covers it)."""

    OPEN = 0
    PAUSED = 1
    ENDED = 2


class Event(enum.IntEnum):
    # The batch (State).
    HOLD = 0  # the batch's replies wait for its commits
    CONTINUE = 1  # the batch goes on in a task
    BLOCK = 2
    UNBLOCK = 3
    DONE = 4  # the batch is answered (or its task ended, or its streamed reply is sent)
    STREAM = 5  # a streamed reply goes out as the socket takes it
    YIELD = 6  # the step's commands are spent (rule 7): the rest runs in the next round
    RESUME = 7  # that next round
    CLOSE = 8  # the transport is closed or closing (the last of the state's events)
    # The input.
    READING_PAUSED = 9
    READING_RESUMED = 10
    INPUT_ENDED = 11
    # The output.
    WRITING_PAUSED = 12
    WRITING_RESUMED = 13


READY, AWAITING_COMMIT, CONTINUING, BLOCKED, STREAMING, YIELDED, CLOSED = State
OPEN, PAUSED, ENDED = Flow
(HOLD, CONTINUE, BLOCK, UNBLOCK, DONE, STREAM, YIELD, RESUME, CLOSE, READING_PAUSED,
 READING_RESUMED, INPUT_ENDED, WRITING_PAUSED, WRITING_RESUMED) = Event

_STATE_TRANSITIONS: dict[State, dict[Event, State]] = {
    READY: {HOLD: AWAITING_COMMIT, CONTINUE: CONTINUING, STREAM: STREAMING, YIELD: YIELDED,
            CLOSE: CLOSED},
    AWAITING_COMMIT: {DONE: READY, CLOSE: CLOSED},
    CONTINUING: {BLOCK: BLOCKED, DONE: READY, CLOSE: CLOSED},
    BLOCKED: {UNBLOCK: CONTINUING, DONE: READY, CLOSE: CLOSED},
    STREAMING: {DONE: READY, CLOSE: CLOSED},
    YIELDED: {RESUME: READY, CLOSE: CLOSED},
    CLOSED: dict.fromkeys((HOLD, CONTINUE, BLOCK, UNBLOCK, DONE, STREAM, YIELD, RESUME, CLOSE),
                          CLOSED),
}
_INPUT_TRANSITIONS: dict[Flow, dict[Event, Flow]] = {
    OPEN: {READING_PAUSED: PAUSED, INPUT_ENDED: ENDED},
    PAUSED: {READING_RESUMED: OPEN, INPUT_ENDED: ENDED},
    ENDED: {INPUT_ENDED: ENDED},
}
_OUTPUT_TRANSITIONS: dict[Flow, dict[Event, Flow]] = {
    OPEN: {WRITING_PAUSED: PAUSED, WRITING_RESUMED: OPEN},
    PAUSED: {WRITING_PAUSED: PAUSED, WRITING_RESUMED: OPEN},
}


class Sink(Protocol):
    """What a connection needs of its transport (asyncio.Transport has all of it)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class _Detached:
    """The sink before `attach`: closed, so nothing is ever written to it."""

    def write(self, data: bytes) -> None:
        raise LocalProtocolError("write failed: the connection has no transport yet")

    def close(self) -> None: ...
    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


_DETACHED = _Detached()


class Connections:
    """The open connections, at most `maxclients` (rule 5), and the client ids."""

    def __init__(self, maxclients: int, buffers_size_max_bytes: int = 1 << 62) -> None:
        self._maxclients = maxclients
        self._open: set[Connection] = set()
        self._client_ids = itertools.count(1)
        # Rule 6: what every connection's buffers hold, as each last counted its own.
        self._buffers_size_max_bytes = buffers_size_max_bytes
        self.buffers_size_bytes = 0

    def count_buffers(self, delta_bytes: int) -> None:
        """A connection's buffers changed by `delta_bytes`; past the bound the connection
        that holds the most is disconnected, until the total is within it (rule 6)."""
        self.buffers_size_bytes += delta_bytes
        while self.buffers_size_bytes > self._buffers_size_max_bytes and self._open:
            biggest = max(self._open, key=lambda connection: connection.buffers_size_bytes)
            if not biggest.buffers_size_bytes:
                break
            _logger.warning("client %d: %d bytes buffered, the most while all clients hold "
                            "%d (client_buffers_size_max_bytes %d): closing",
                            biggest.client.id, biggest.buffers_size_bytes,
                            self.buffers_size_bytes, self._buffers_size_max_bytes)
            biggest.abort()

    def next_client_id(self) -> int:
        return next(self._client_ids)

    def admit(self, connection: Connection) -> bool:
        if len(self._open) >= self._maxclients:
            return False
        self._open.add(connection)
        return True

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)

    def close_all(self) -> None:
        for connection in list(self._open):
            connection.close()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._open))


Replies = list[bytes | Streamed]
_NOTHING_HELD: tuple[Replies, bool] = ([], False)


class Connection:
    """One client's state machine (see the module docstring)."""

    def __init__(self, context: ServerContext, connections: Connections) -> None:
        self._context = context
        self._connections = connections
        self._coordinator: CommitCoordinator = context.coordinator
        self._readers = context.readers
        # What a lone write to each log waits for (None: nothing, with fsync everysec).
        self._stream_write_committer = self._coordinator.lone_write_committer("streams")
        self._kv_write_committer = self._coordinator.lone_write_committer("kv")
        settings = context.settings
        self._limits = settings.limits
        # A batch's commands: pipeline_depth_max, and no more than one step runs (rule 7).
        self._depth_max = min(settings.pipeline_depth_max, settings.commands_per_step_max)
        self._step_max = settings.commands_per_step_max
        self._output_size_max_bytes = settings.output_buffer_size_max_bytes
        # Rule 8: the input read while replies wait for the client.
        self._input_held_size_max_bytes = max(
            READ_SIZE_BYTES,
            settings.limits.query_buffer_size_max_bytes - TRANSPORT_READ_SIZE_MAX_BYTES)
        self.client = Client(connections.next_client_id(),
                             authenticated=not settings.requirepass)
        self.codec = resp.RespReader(settings.limits,
                                     authentication_required=not self.client.authenticated)
        self._sink: Sink = _DETACHED
        self.state = READY
        self.input = OPEN
        self.output = OPEN
        # AWAITING_COMMIT's data: commits still due, the first error, the held replies.
        self._commit_waits_count = 0
        self._commit_error: BaseException | None = None
        self._held = _NOTHING_HELD
        self._blocked_task: asyncio.Task[None] | None = None  # BLOCKED's task, to cancel
        self._continue_task: asyncio.Task[None] | None = None  # CONTINUING's task
        # The commands of a batch not run yet, from this index, because its replies were due
        # first (rule 3); run before any new input.
        self._rest: tuple[list[list[bytes]], int] | None = None
        # STREAMING's data: the reply, whether to close after it, the scheduled next step.
        self._streaming: tuple[Streamed, bool] | None = None
        self._stream_step_handle: asyncio.Handle | None = None
        self._step_handle: asyncio.Handle | None = None  # YIELDED's next round (rule 7)
        # Rule 6: the buffers as last counted, and a half-sent request's timer.
        self.buffers_size_bytes = 0
        self._request_timeout_s = settings.request_timeout_s
        self._input_at_s = 0.0
        self._request_timer: asyncio.TimerHandle | None = None

    @property
    def held_output_size_bytes(self) -> int:
        """Replies written to the transport and not yet taken by the socket (what rule 3's
        hard limit bounds)."""
        return self._sink.get_write_buffer_size()

    def _read_pause_size_bytes(self) -> int:
        """Buffered input past which reading pauses: READ_SIZE_BYTES while the server goes on
        by itself, and rule 8's bound while the replies wait for the client to read."""
        return READ_SIZE_BYTES if self.output is OPEN else self._input_held_size_max_bytes

    def _transition(self, event: Event) -> None:
        """Every change of state, input or output goes through here."""
        try:
            if event <= CLOSE:
                self.state = _STATE_TRANSITIONS[self.state][event]
            elif event <= INPUT_ENDED:
                self.input = _INPUT_TRANSITIONS[self.input][event]
            else:
                self.output = _OUTPUT_TRANSITIONS[self.output][event]
        except KeyError:
            current = self.state if event <= CLOSE else \
                self.input if event <= INPUT_ENDED else self.output
            raise self._unexpected(event, current) from None

    def _unexpected(self, event: Event, state: enum.IntEnum) -> LocalProtocolError:
        return LocalProtocolError(f"client {self.client.id}: event {event.name} in state "
                                  f"{state.name}")

    # ------------------------------------------------------------------ events

    def attach(self, sink: Sink) -> None:
        """Event: the transport is there. Over maxclients it is refused (rule 5)."""
        self._sink = sink
        if not self._connections.admit(self):
            sink.write(MAXCLIENTS_REPLY)
            sink.close()
            self._transition(CLOSE)

    def receive(self, data: bytes) -> None:
        """Event: bytes from the client."""
        if self.state is not READY or self.output is not OPEN:
            self._buffer(data)
            return
        context = self._context
        client = self.client
        # One request alone from a client that waits for its reply (redis-benchmark -c 50, a
        # cache, a producer): the commonest requests of all take their lane here.
        lone = client.multi is None and client.authenticated and not context.closing and \
            self.input is OPEN and not client.sync_required and \
            not self.codec.buffered_size_bytes
        declined = False
        if lone and context.xadd_lane_enabled and len(data) > 9 and (
                (data[4] == 36 and data[5] == 52) or (data[5] == 36 and data[6] == 52)):
            # The XADD lane's C form, for `*N\r\n$4...` (a first word of four letters, or 40
            # and more; the rest is checked in C): the received bytes to the pending record in
            # one call (StreamStore.add_lone).
            limits = self._limits
            taken = context.streams.add_lone(data, limits.bulk_size_max_bytes,
                                             limits.arguments_count_max)
            if taken is not None:
                client.written_keys.add(taken[0])  # wakes its blocked readers once committed
                self._answer_write(taken[1], self._stream_write_committer)
                return
            # Declined: the C form takes every frame the Python XADD lane would take, so this
            # request goes to its handler, which is what any lane would have done.
            declined = True
        try:
            # The common read: whole commands, split straight from `data` (resp.py).
            commands = self.codec.feed_and_take(data, self._depth_max)
        except RemoteProtocolError as error:
            self._protocol_error(error)
            return
        if self.codec.buffered_size_bytes or self.buffers_size_bytes:
            self._input_held()
            if self.state is CLOSED:  # the biggest holder of buffers (rule 6)
                return
        if lone and len(commands) == 1:
            command = commands[0]
            lane = None if declined else LANES.get(command[0].upper())
            if lane is not None:
                try:
                    reply = lane.run(context, client, command)
                except StreamError:
                    reply = None  # nothing written: the handler answers the error
                if reply is not None:
                    log = lane.log
                    if log is None:  # a read: nothing to commit
                        self._send([reply], False)
                    else:
                        self._answer_write(reply, self._kv_write_committer if log == "kv"
                                           else self._stream_write_committer, log == "kv")
                    return
            self._pump(commands, lanes=False)  # decided: no lane (dispatch.py rule 3)
            return
        self._pump(commands)

    def commit_done(self, error: BaseException | None) -> None:
        """Event: a commit the held batch enlisted with (one or two: the stream log's and the
        KV log's) is done; the batch is answered when the last of them is."""
        # Invariant: only a commit this connection enlisted with calls back, once.
        if self._commit_waits_count <= 0:
            raise LocalProtocolError(f"client {self.client.id}: commit_done without a commit "
                                     "enlisted")
        if error is not None and self._commit_error is None:
            self._commit_error = error
        self._commit_waits_count -= 1
        if self._commit_waits_count:
            return
        error, self._commit_error = self._commit_error, None
        (replies, close), self._held = self._held, _NOTHING_HELD
        self.state = _STATE_TRANSITIONS[self.state][DONE]  # _transition(DONE), inlined
        if error is not None:
            replies = self._failed_replies(error, len(replies))
        else:
            self._batch_committed()
        if self._send(replies, close) and (self.input is not OPEN or self._rest is not None or
                                           self.codec.buffered_size_bytes):
            self._pump()  # input came while the batch waited (else _pump would find none)

    def input_ended(self) -> bool:
        """Event: the client will send no more. Its commands are answered (a batch may still
        be waiting for its commit), then the connection closes; a blocked reader that hangs up
        is gone at once (as in Redis). True: keep the transport open for the replies."""
        self._transition(INPUT_ENDED)
        # With a batch in flight, a streamed reply, the rest of a batch or replies still to
        # drain, what is due runs first and the end of _pump closes.
        if self.state is BLOCKED or (self.state is READY and self._rest is None and
                                     self.output is OPEN):
            self.close()
        return True

    def writing_paused(self) -> None:
        """Event: the transport's output buffer is over its high-water mark."""
        self._transition(WRITING_PAUSED)
        # Rule 8: input paused at READ_SIZE_BYTES (a batch waited, a step yielded) is read
        # again now that the client is the one to act.
        if self.input is PAUSED and \
                self.codec.buffered_size_bytes < self._input_held_size_max_bytes:
            self._transition(READING_RESUMED)
            self._sink.resume_reading()

    def writing_resumed(self) -> None:
        """Event: the transport's output buffer drained below its low-water mark."""
        self._transition(WRITING_RESUMED)
        if self.buffers_size_bytes:
            self._count_buffers()
        if self.state is STREAMING:
            self._stream_on()
        elif self.state is READY:
            self._pump()

    def lost(self) -> None:
        """Event: the transport is closed. What the connection holds is given back now, not
        when the connection object goes (a commit it enlisted with may still hold it until
        that commit ends): its buffered input, held replies and MULTI queue."""
        self._transition(CLOSE)
        self._context.watches.unwatch(self.client)
        self._connections.forget(self)
        if self._blocked_task is not None:  # a blocked reader that left stops waiting now
            self._blocked_task.cancel()
        if self._stream_step_handle is not None:
            self._stream_step_handle.cancel()
        if self._step_handle is not None:
            self._step_handle.cancel()
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self._connections.count_buffers(-self.buffers_size_bytes)
        self.buffers_size_bytes = 0
        self._stream_step_handle = self._step_handle = self._streaming = self._rest = None
        self.codec.discard()
        self._held = _NOTHING_HELD
        self.client.multi = None
        self._sink = _DETACHED

    def close(self) -> None:
        """Closes the transport (its buffered replies still go out)."""
        self._sink.close()
        self._transition(CLOSE)

    def abort(self) -> None:
        """Drops the connection and what it holds at once (rule 6)."""
        self._sink.abort()
        self._transition(CLOSE)
        self._connections.count_buffers(-self.buffers_size_bytes)
        self.buffers_size_bytes = 0

    def _count_buffers(self) -> None:
        """Rule 6: tells the registry how much this connection's buffers hold now."""
        size = self.codec.buffered_size_bytes + self._sink.get_write_buffer_size()
        delta_bytes = size - self.buffers_size_bytes
        if delta_bytes:
            self.buffers_size_bytes = size
            self._connections.count_buffers(delta_bytes)

    def _input_held(self) -> None:
        """Input stays buffered: counted (rule 6), and a half-sent request gets its timer."""
        loop = asyncio.get_running_loop()
        self._input_at_s = loop.time()
        if self._request_timer is None and self.codec.buffered_size_bytes:
            self._request_timer = loop.call_at(self._input_at_s + self._request_timeout_s,
                                               self._request_timed_out)
        self._count_buffers()

    def _request_timed_out(self) -> None:
        """Rule 6: a half-sent request without a byte for request_timeout_s disconnects its
        client; input held while the server is the one that waits (a batch in flight, a full
        socket) does not count."""
        self._request_timer = None
        if self.state is CLOSED or not self.codec.buffered_size_bytes:
            return
        loop = asyncio.get_running_loop()
        due_s = self._input_at_s + self._request_timeout_s
        if self.state is READY and self.output is OPEN and loop.time() >= due_s:
            _logger.warning("client %d: a request half-sent for %.1f s, closing",
                            self.client.id, self._request_timeout_s)
            self.abort()
            return
        self._request_timer = loop.call_at(max(due_s, loop.time() + 0.1),
                                           self._request_timed_out)

    # ------------------------------------------------------------------ running commands

    def _buffer(self, data: bytes) -> None:
        """Input while commands cannot run (rule 1)."""
        if self.state is CLOSED:
            return  # nothing more runs: the bytes are dropped
        try:
            self.codec.feed(data)
        except RemoteProtocolError as error:
            self._protocol_error(error)
            return
        self._input_held()
        if self.state is CLOSED:  # the biggest holder of buffers (rule 6)
            return
        if self.input is OPEN and self.codec.buffered_size_bytes >= self._read_pause_size_bytes():
            self._transition(READING_PAUSED)
            self._sink.pause_reading()

    def _answer_write(self, reply: bytes, committer: Committer | None,
                      wrote_kv: bool = False) -> None:
        """A lone write's end: `reply` goes out once `committer`'s commit covers it, or now
        when there is none to wait for (unless a KV write finds the held overlay past its
        bound: commit.py `overlay_committer`)."""
        if committer is None:
            try:
                self._coordinator.append_pending()
            except Exception as error:  # noqa: BLE001 - the append failed: answered as such
                self._send(self._failed_replies(error, 1), False)
                return
            committer = self._coordinator.overlay_committer() if wrote_kv else None
            if committer is None:
                self._batch_committed()
                self._send([reply], False)
                return
        committer.enlist(self)
        # _hold for one commit, and _transition(HOLD) inlined: the commonest write.
        self.state = _STATE_TRANSITIONS[self.state][HOLD]
        self._commit_waits_count = 1
        self._held = ([reply], False)

    def _hold(self, replies: Replies, close: bool, waits_count: int) -> None:
        """The batch waits for `waits_count` commits it enlisted with (they never call back
        from inside enlist: commit.py rule 3)."""
        self._transition(HOLD)
        self._commit_waits_count = waits_count
        self._held = (replies, close)

    def _pump(self, commands: list[list[bytes]] | None = None, lanes: bool = True) -> None:
        """Runs `commands` (a batch already taken from the reader), then the rest of a batch
        (`_rest`) or the whole commands buffered, batch by batch (`_depth_max` commands per
        batch), until the buffer holds none, a batch must wait, the socket must take the
        replies first (rule 3), or this step has run its `commands_per_step_max` (rule 7:
        YIELDED, the rest runs in the loop's next round). `lanes`: see run_sync."""
        context, client, codec = self._context, self.client, self.codec
        coordinator = self._coordinator
        budget = self._step_max  # the commands this step may still run (rule 7)
        sent_size = 0  # the bytes of replies this step wrote (rule 7)
        start = 0
        while self.state is READY and self.output is OPEN and not context.closing:
            if commands is None:
                rest = self._rest
                if sent_size >= STEP_OUTPUT_SIZE_MAX_BYTES and (
                        rest is not None or codec.buffered_size_bytes):
                    self._yield()  # a socket that takes all is no reason to go on (rule 7)
                    return
                if rest is not None:
                    if len(rest[0]) - rest[1] > budget:  # a batch runs whole, in one step
                        self._yield()
                        return
                    (commands, start), self._rest = rest, None
                elif budget <= 0:
                    if codec.buffered_size_bytes:  # maybe whole commands: the next round
                        self._yield()
                        return
                    break
                else:
                    try:
                        commands = codec.next_commands(min(self._depth_max, budget))
                    except RemoteProtocolError as error:
                        self._protocol_error(error)
                        return
                    if not commands:
                        break
                    start = 0
            elif not commands:
                commands = None
                continue
            replies: Replies = []
            client.wrote = False
            marks = coordinator.marks()
            index, close, blocked = run_sync(context, client, commands, start, replies, lanes)
            budget -= index - start
            lanes = True
            codec.authentication_required = not client.authenticated
            if blocked is OUTPUT_FULL:  # the replies go first, the rest runs after (rule 3)
                if index < len(commands):
                    self._rest = (commands, index)
            elif blocked is not None or (index < len(commands) and not close):
                assert blocked is None or isinstance(blocked, Blocked)
                self._transition(CONTINUE)
                # Kept: the loop holds a task only weakly. Dropped when it ends (_continue).
                self._continue_task = asyncio.get_running_loop().create_task(
                    self._continue(commands, index, replies, blocked))
                return
            try:
                waits_count = coordinator.enlist_batch(self, marks, client.wrote,
                                                       client.sync_required)
            except Exception as error:  # noqa: BLE001 - the append failed: answered as such
                if not self._send(self._failed_replies(error, len(replies)), close):
                    return
                commands = None
                continue
            if waits_count:
                # The common write: the group commits call commit_done, no task or future.
                self._hold(replies, close, waits_count)
                return
            self._batch_committed()
            if not self._send(replies, close):
                return
            sent_size += sum(map(len, cast(list[bytes], replies)))  # _send took a Streamed
            commands = None
        self._pumped()

    def _pumped(self) -> None:
        """The end of `_pump` with nothing left to run now: the input it ran is counted off,
        and input that ended closes the connection, or input that paused reads again."""
        if self.state is not READY or self.output is not OPEN:
            return
        if self.buffers_size_bytes:  # the input it ran is no longer held (rule 6)
            self._count_buffers()
        if self.input is ENDED:
            self.close()
        elif self.input is PAUSED:
            self._transition(READING_RESUMED)
            self._sink.resume_reading()

    def _yield(self) -> None:
        """Rule 7: this step ran its commands and more may be buffered. The rest runs in the
        loop's next round, after the callbacks already due (another client's PING among them);
        meanwhile input is only buffered, and reading pauses while READ_SIZE_BYTES are (or
        resumes once the steps have brought the backlog below that)."""
        self._transition(YIELD)
        self._step_handle = asyncio.get_running_loop().call_soon(self._step_on)
        if self.buffers_size_bytes:  # the input it ran is no longer held (rule 6)
            self._count_buffers()
            if self.state is CLOSED:  # the biggest holder of buffers (rule 6)
                return
        buffered_size_bytes = self.codec.buffered_size_bytes
        pause_size_bytes = self._read_pause_size_bytes()
        if self.input is OPEN and buffered_size_bytes >= pause_size_bytes:
            self._transition(READING_PAUSED)
            self._sink.pause_reading()
        elif self.input is PAUSED and buffered_size_bytes < pause_size_bytes:
            self._transition(READING_RESUMED)
            self._sink.resume_reading()

    def _step_on(self) -> None:
        """The loop's next round after a YIELD: the connection goes on where it stopped."""
        self._step_handle = None
        if self.state is not YIELDED:  # closed meanwhile
            return
        self._transition(RESUME)
        self._pump()

    async def _continue(self, commands: list[list[bytes]], index: int, replies: Replies,
                        blocked: Blocked | None) -> None:
        """The rest of a batch that must wait (state CONTINUING): before a read that must see
        the batch's writes (commit first), or in a blocking read (commit what came before,
        then wait). It ends early when its replies are due first (rule 3: `_rest` holds what
        is left)."""
        client = self.client
        close = False
        committed_count = 0  # replies whose writes a commit of this batch made durable
        try:
            while True:
                failure = await self._commit_now()
                if failure is not None:  # the rest of the batch is answered with the error
                    replies = replies[:committed_count] + [failure] * (
                        len(commands) - committed_count)
                    break
                committed_count = len(replies)
                if blocked is not None and blocked.later is not None:
                    # Work off the loop (maintenance.py): CONTINUING, not BLOCKED, so the
                    # client's EOF does not cut the reply that is due.
                    replies.append(resp.encode(await blocked.later(), client.protocol))
                elif blocked is not None:
                    self._transition(BLOCK)
                    self._blocked_task = asyncio.current_task()
                    reply = await self._wait(blocked)
                    self._blocked_task = None
                    self._transition(UNBLOCK)
                    if reply.__class__ is Streamed:  # sent last, the rest after it (rule 3)
                        replies.append(reply)
                        if index < len(commands):
                            self._rest = (commands, index)
                        break
                    replies.append(resp.encode(reply, client.protocol))
                index, close, stop = run_sync(self._context, client, commands, index, replies)
                self.codec.authentication_required = not client.authenticated
                if stop is OUTPUT_FULL:
                    if index < len(commands):
                        self._rest = (commands, index)
                    break
                blocked = stop if isinstance(stop, Blocked) else None
                if close or (blocked is None and index == len(commands)):
                    break
            failure = await self._commit_now()
            if failure is not None:
                replies = replies[:committed_count] + [failure] * (
                    len(replies) - committed_count)
        except asyncio.CancelledError:
            return  # the client left while blocked
        finally:
            self._blocked_task = self._continue_task = None  # no cycle through the task
            self._transition(DONE)
        if self._send(replies, close):
            self._pump()

    async def _wait(self, blocked: Blocked) -> Reply:
        """A blocking read's wait: until an attempt finds something, or the timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if blocked.timeout_ms == 0 else loop.time() + blocked.timeout_ms / 1000
        readers = self._readers
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return blocked.timeout_reply
            if not await readers.wait(blocked.keys, remaining):
                return blocked.timeout_reply
            try:
                reply = blocked.attempt()
            except (CommandError, StreamError) as error:
                return resp.ErrorReply(str(error).encode())
            if reply is not None:
                return reply
            # What the attempt wrote (a new consumer) is committed before waiting again.
            failure = await self._commit_now()
            if failure is not None:
                return resp.ErrorReply(failure[1:-2])

    async def _commit_now(self) -> bytes | None:
        """Appends and commits the batch so far (CommitCoordinator.commit_batch); the error
        reply if that fails."""
        client = self.client
        try:
            await self._coordinator.commit_batch(client.wrote, client.sync_required)
        except Exception as error:  # noqa: BLE001 - a failed commit fences the log: every
            return self._batch_failed(error)  # write it covered is answered with the error
        self._batch_committed()
        return None

    def _batch_committed(self) -> None:
        """After the batch's commits: wakes the blocked readers of the streams it wrote."""
        client = self.client
        client.wrote = client.sync_required = False
        written_keys = client.written_keys
        if written_keys:
            readers = self._readers
            if readers.blocked_count:
                readers.wake(written_keys)
            written_keys.clear()

    def _batch_failed(self, error: BaseException) -> bytes:
        """The error reply of a failed append or commit (which fences the log: the server
        then refuses writes and reloads what was committed, recovery.py)."""
        client = self.client
        client.wrote = client.sync_required = False
        client.written_keys.clear()  # nothing of theirs was committed: no reader wakes
        _logger.debug("commit failed: %s", error)
        return resp.encode(resp.ErrorReply(b"ERR commit failed: " +
                                           " ".join(str(error).split()).encode()),
                           client.protocol)

    def _failed_replies(self, error: BaseException, count: int) -> Replies:
        """A failed batch's `count` replies: each one is the error (a read of the batch may
        have seen its writes), so the client's replies stay in step and the connection stays
        open; later writes get the fence's refusal (fence.py)."""
        return [self._batch_failed(error)] * count

    def _send(self, replies: Replies, close: bool) -> bool:
        """Writes the replies (a streamed one, always the last, is started: STREAMING);
        False when nothing more is to run now (closed, a client over the output limit
        disconnected, or a streamed reply still going out: rule 3)."""
        sink = self._sink
        if self.state is CLOSED or sink.is_closing():
            return False
        streamed = None
        if replies:
            if replies[-1].__class__ is Streamed:
                streamed = cast(Streamed, replies.pop())
            if len(replies) == 1:
                sink.write(cast(bytes, replies[0]))
            elif replies:
                sink.write(b"".join(cast(list[bytes], replies)))
        if not self._within_output_limit():
            return False
        if streamed is not None:
            self._transition(STREAM)
            self._streaming = (streamed, close)
            sink.write(streamed.header())
            if not self._stream_step():
                return False
        if close:
            self.close()
            return False
        return True

    def _within_output_limit(self) -> bool:
        """Rule 3's hard limit: past it the client is disconnected (False)."""
        sink = self._sink
        held_bytes = sink.get_write_buffer_size()
        if held_bytes or self.buffers_size_bytes:
            self._count_buffers()
        if held_bytes <= self._output_size_max_bytes:
            return True
        _logger.warning("client %d: output buffer over its limit, closing", self.client.id)
        sink.abort()
        self._transition(CLOSE)
        return False

    def _stream_step(self) -> bool:
        """Sends more of the streamed reply while the socket takes it (output OPEN), at most
        STREAM_STEP_SIZE_MAX_BYTES before the next step is left to the loop's next round.
        True once it is all sent (state READY again); False while it goes on, or when the
        connection is closed."""
        assert self._streaming is not None, "a stream step without a streamed reply"
        streamed = self._streaming[0]
        sink, protocol = self._sink, self.client.protocol
        sent_size = 0
        while self.output is OPEN:
            if sent_size >= STREAM_STEP_SIZE_MAX_BYTES:
                self._stream_step_handle = asyncio.get_running_loop().call_soon(self._stream_on)
                return False
            try:
                chunk = streamed.take(STREAM_CHUNK_SIZE_BYTES, protocol)
            except Exception:
                # A read failed mid-reply (a truncation under it): the reply can be neither
                # finished nor taken back, so the connection goes.
                _logger.exception("client %d: a streamed reply failed, closing",
                                  self.client.id)
                sink.abort()
                self._transition(CLOSE)
                return False
            if chunk is None:
                self._streaming = None
                self._transition(DONE)
                return True
            sink.write(chunk)
            # A take is a chunk's work at least (small elements: streamed.py), more if bigger.
            sent_size += max(len(chunk), STREAM_CHUNK_SIZE_BYTES)
            if not self._within_output_limit():
                return False
        return False  # the socket is full: writing_resumed goes on

    def _stream_on(self) -> None:
        """The next step of a streamed reply (the socket drained, or the loop came round);
        once it is sent, the connection goes on as after any reply."""
        self._stream_step_handle = None
        if self.state is not STREAMING or self._streaming is None:
            return
        close = self._streaming[1]
        if not self._stream_step():
            return
        if close:
            self.close()
        else:
            self._pump()

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        """Rule 4: the error, then the connection is closed."""
        sink = self._sink
        if self.state is not CLOSED and not sink.is_closing():
            sink.write(resp.encode(resp.ErrorReply(b"ERR " + str(error).encode()), 2))
            sink.close()
        self._transition(CLOSE)


class ConnectionProtocol(Connection, asyncio.Protocol):
    """The asyncio adapter: each transport callback is the machine's event of that name."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sink = cast(asyncio.Transport, transport)
        sink.set_write_buffer_limits(high=OUTPUT_HIGH_WATER_BYTES)
        self.attach(sink)

    data_received = Connection.receive
    eof_received = Connection.input_ended
    pause_writing = Connection.writing_paused
    resume_writing = Connection.writing_resumed

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()
