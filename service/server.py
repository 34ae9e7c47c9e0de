"""The RESP server: Redis Streams on a fasterlog log, with durable acknowledgements.

Rules:
1. A write is answered only after the group commit that covers it, so an acknowledged XADD
   survives kill -9 and power loss. `fsync="everysec"` answers at once and commits every second:
   for comparison with redis-server's default, documented as not durable per reply.
2. A connection's commands are answered in order; the writes of one pipelined read share one
   commit, and commits of concurrent connections share syncs (the log's group commit).
3. Every buffer is bounded: the codec's limits (bulk length, arguments, inline size, query
   buffer), the commands taken from one read (`pipeline_depth_max`), and a slow reader's
   output buffer (`output_buffer_size_max_bytes`): past it the client is disconnected.
4. A malformed frame gets -ERR and a closed connection; no input crashes the server.
5. The server binds 127.0.0.1 unless told otherwise, and refuses any other address without a
   password. Passwords are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fasterlog import FasterLog

from . import resp
from .errors import RemoteProtocolError
from .streams import ID_MAX, StreamError, StreamStore, parse_id

__all__ = ["Server", "ServerSettings"]

_logger = logging.getLogger("fasterlog.service")
REDIS_VERSION = b"7.4.0"
READ_SIZE_BYTES = 64 << 10


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 6380
    requirepass: str | None = None
    fsync: str = "always"  # or "everysec"
    limits: resp.RespLimits = field(default_factory=lambda: resp.RespLimits(
        bulk_size_max_bytes=64 << 20, query_buffer_size_max_bytes=256 << 20))
    pipeline_depth_max: int = 10_000
    output_buffer_size_max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "everysec"):
            raise ValueError(f"fsync must be 'always' or 'everysec', not {self.fsync!r}")
        if not _is_loopback(self.host) and not self.requirepass:
            raise ValueError(f"refusing to listen on {self.host}: a non-loopback address "
                             "needs --requirepass")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CommandError(Exception):
    """An error reply; the message is the full Redis error text (e.g. "ERR syntax error")."""


@dataclass
class Client:
    id: int
    authenticated: bool
    protocol: int = 2
    name: bytes | None = None
    wrote: bool = False  # the current batch changed the log: commit before answering


Handler = Callable[["Server", Client, list[bytes]], Any]
_COMMANDS: dict[bytes, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _COMMANDS[name.encode()] = handler
        return handler
    return register


class Server:
    """Serves one log directory. `await server.start()`, then `await server.wait_closed()`."""

    def __init__(self, log: FasterLog, settings: ServerSettings = ServerSettings()) -> None:
        self.log = log
        self.settings = settings
        self.streams = StreamStore(log)
        self._client_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self.port = settings.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.settings.host,
                                                  self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.settings.fsync == "everysec":
            self._commit_task = asyncio.create_task(self._commit_every_second())

    async def close(self) -> None:
        """Stops accepting, commits what was appended, and closes the listening socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._commit_task is not None:
            self._commit_task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self.log.commit)

    async def _commit_every_second(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            await loop.run_in_executor(None, self.log.commit)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Client(next(self._client_ids), authenticated=not self.settings.requirepass)
        codec = resp.RespReader(self.settings.limits,
                                authentication_required=not client.authenticated)
        try:
            while True:
                data = await reader.read(READ_SIZE_BYTES)
                if not data:
                    return
                codec.feed(data)
                replies, close = await self._run_batch(client, codec)
                writer.write(b"".join(replies))
                if writer.transport.get_write_buffer_size() > \
                        self.settings.output_buffer_size_max_bytes:
                    _logger.warning("client %d: output buffer over its limit, closing",
                                    client.id)
                    return
                await writer.drain()
                if close:
                    return
        except RemoteProtocolError as error:
            writer.write(resp.encode(resp.ErrorReply(b"ERR " + str(error).encode()), 2))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _run_batch(self, client: Client,
                         codec: resp.RespReader) -> tuple[list[bytes], bool]:
        replies: list[bytes] = []
        close = False
        client.wrote = False
        for _ in range(self.settings.pipeline_depth_max):
            arguments = codec.next_command()
            if arguments is resp.NEED_MORE:
                break
            assert isinstance(arguments, list)
            reply, close = self._dispatch(client, arguments)
            codec.authentication_required = not client.authenticated
            replies.append(resp.encode(reply, client.protocol))
            if close:
                break
        if client.wrote and self.settings.fsync == "always":
            # Durable acknowledgement: the group commit runs in a thread (it releases the GIL
            # while it waits for the sync), so other connections keep being served.
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.log.commit)
            except Exception as error:  # a failed commit fences the log: answer every write
                _logger.error("commit failed: %s", error)
                return [resp.encode(resp.ErrorReply(b"ERR commit failed: " +
                                                    str(error).encode()), client.protocol)], True
        return replies, close

    def _dispatch(self, client: Client, arguments: list[bytes]) -> tuple[Any, bool]:
        name = arguments[0].upper()
        if not client.authenticated and name not in (b"AUTH", b"HELLO", b"QUIT"):
            return resp.ErrorReply(b"NOAUTH Authentication required."), False
        handler = _COMMANDS.get(name)
        if handler is None:
            text = b" ".join(b"'%s'" % a[:64] for a in arguments[1:4])
            return resp.ErrorReply(b"ERR unknown command '%s', with args beginning with: %s"
                                   % (arguments[0][:64], text)), False
        try:
            reply = handler(self, client, arguments)
        except (CommandError, StreamError) as error:
            return resp.ErrorReply(str(error).encode()), False
        if reply is _QUIT:
            return resp.SimpleString(b"OK"), True
        return reply, False

    def check_password(self, password: bytes) -> bool:
        expected = (self.settings.requirepass or "").encode()
        return bool(expected) and hmac.compare_digest(password, expected)


_QUIT = object()
OK = resp.SimpleString(b"OK")


def _arity(arguments: list[bytes], minimum: int) -> None:
    if len(arguments) < minimum:
        raise CommandError("ERR wrong number of arguments for '%s' command"
                           % arguments[0].decode(errors="replace").lower())


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


# ---------------------------------------------------------------------- connection commands


@command("PING")
def _ping(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return arguments[1] if len(arguments) > 1 else resp.SimpleString(b"PONG")


@command("ECHO")
def _echo(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    return arguments[1]


@command("QUIT")
def _quit(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _QUIT


@command("AUTH")
def _auth(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    if not server.settings.requirepass:
        raise CommandError("ERR AUTH <password> called without any password configured for "
                           "the default user. Are you sure your configuration is correct?")
    if len(arguments) > 3 or (len(arguments) == 3 and arguments[1] != b"default") or \
            not server.check_password(arguments[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    client.authenticated = True
    return OK


@command("HELLO")
def _hello(server: Server, client: Client, arguments: list[bytes]) -> Any:
    protocol = client.protocol
    position = 1
    if len(arguments) > 1:
        protocol = _integer(arguments[1])
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        position = 2
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"AUTH" and position + 2 < len(arguments):
            _auth(server, client, [b"AUTH", arguments[position + 1], arguments[position + 2]])
            position += 3
        elif option == b"SETNAME" and position + 1 < len(arguments):
            client.name = arguments[position + 1]
            position += 2
        else:
            raise CommandError("ERR Syntax error in HELLO option '%s'"
                               % option.decode(errors="replace"))
    if not client.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, "
                           "otherwise the HELLO <proto> AUTH <user> <pass> option can be used")
    client.protocol = protocol
    return resp.Map({b"server": b"redis", b"version": REDIS_VERSION, b"proto": protocol,
                     b"id": client.id, b"mode": b"standalone", b"role": b"master",
                     b"modules": []})


@command("SELECT")
def _select(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    if _integer(arguments[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


@command("CLIENT")
def _client(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    sub = arguments[1].upper()
    if sub == b"SETNAME" and len(arguments) == 3:
        client.name = arguments[2] or None
        return OK
    if sub == b"GETNAME":
        return client.name
    if sub == b"ID":
        return client.id
    if sub == b"SETINFO" and len(arguments) == 4:
        return OK
    raise CommandError("ERR unknown subcommand or wrong number of arguments for 'CLIENT|%s'"
                       % sub.decode(errors="replace").lower())


@command("COMMAND")
def _command(server: Server, client: Client, arguments: list[bytes]) -> Any:
    sub = arguments[1].upper() if len(arguments) > 1 else b""
    if sub == b"COUNT":
        return len(_COMMANDS)
    if sub == b"DOCS":
        return resp.Map()
    if sub == b"INFO":
        return [None for _ in arguments[2:]]
    return []


@command("INFO")
def _info(server: Server, client: Client, arguments: list[bytes]) -> Any:
    state = server.log
    lines = [b"# Server", b"redis_version:" + REDIS_VERSION, b"fasterlog_version:0.1.0",
             b"", b"# Persistence", b"aof_enabled:1",
             b"fasterlog_committed_until:%d" % state.committed_until_address,
             b"", b"# Keyspace", b"db0:keys=%d,expires=0,avg_ttl=0" % len(server.streams.streams)]
    return b"\r\n".join(lines) + b"\r\n"


@command("CONFIG")
def _config(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    if arguments[1].upper() != b"GET":
        raise CommandError("ERR CONFIG %s is not supported" % arguments[1].decode(errors="replace"))
    import fnmatch

    values = {b"save": b"", b"appendonly": b"yes",
              b"appendfsync": b"always" if server.settings.fsync == "always" else b"everysec"}
    found = resp.Map()
    for pattern in arguments[2:]:
        for key, value in values.items():
            if fnmatch.fnmatchcase(key.decode(), pattern.decode(errors="replace")):
                found[key] = value
    return found


@command("DBSIZE")
def _dbsize(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return len(server.streams.streams)


@command("TYPE")
def _type(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    return resp.SimpleString(b"stream" if arguments[1] in server.streams.streams else b"none")


@command("EXISTS")
def _exists(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    return sum(1 for key in arguments[1:] if key in server.streams.streams)


@command("DEL")
def _del(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    deleted = sum(1 for key in dict.fromkeys(arguments[1:]) if server.streams.destroy(key))
    client.wrote = client.wrote or deleted > 0
    return deleted


# ---------------------------------------------------------------------- streams


def _trim_options(arguments: list[bytes], position: int) -> tuple[dict[str, Any], int]:
    """Parses [MAXLEN|MINID [=|~] threshold [LIMIT count]] at `position`."""
    option = arguments[position].upper()
    position += 1
    if position < len(arguments) and arguments[position] in (b"=", b"~"):
        position += 1
    if position >= len(arguments):
        raise CommandError("ERR syntax error")
    if option == b"MAXLEN":
        maxlen = _integer(arguments[position])
        if maxlen < 0:
            raise CommandError("ERR The MAXLEN argument must be >= 0.")
        trim: dict[str, Any] = {"maxlen": maxlen}
    else:
        trim = {"minid": parse_id(arguments[position])}
    position += 1
    if position + 1 < len(arguments) and arguments[position].upper() == b"LIMIT":
        _integer(arguments[position + 1])  # exact trimming: LIMIT only bounds approximate work
        position += 2
    return trim, position


@command("XADD")
def _xadd(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 5)
    key, position = arguments[1], 2
    make_stream, trim = True, None
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"NOMKSTREAM":
            make_stream = False
            position += 1
        elif option in (b"MAXLEN", b"MINID"):
            trim, position = _trim_options(arguments, position)
        else:
            break
    fields = arguments[position + 1:]
    if position >= len(arguments) or not fields or len(fields) % 2:
        raise CommandError("ERR wrong number of arguments for 'xadd' command")
    if not make_stream and key not in server.streams.streams:
        return None
    stream_id = server.streams.next_id(key, arguments[position])
    server.streams.add(key, stream_id, fields)
    if trim is not None:
        server.streams.trim(key, **trim)
    client.wrote = True
    return b"%d-%d" % stream_id


@command("XLEN")
def _xlen(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    return server.streams.length(arguments[1])


def _range(server: Server, arguments: list[bytes], reverse: bool) -> Any:
    _arity(arguments, 4)
    key = arguments[1]
    first, second = (arguments[3], arguments[2]) if reverse else (arguments[2], arguments[3])
    start = (0, 0) if first == b"-" else parse_id(first, missing_seq=0, exclusive_ok=True)
    end = ID_MAX if second == b"+" else parse_id(second, missing_seq=(1 << 64) - 1,
                                                 exclusive_ok=True)
    count = None
    if len(arguments) == 6 and arguments[4].upper() == b"COUNT":
        count = max(0, _integer(arguments[5]))
    elif len(arguments) != 4:
        raise CommandError("ERR syntax error")
    return server.streams.range(key, start, end, count, reverse)


@command("XRANGE")
def _xrange(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _range(server, arguments, reverse=False)


@command("XREVRANGE")
def _xrevrange(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _range(server, arguments, reverse=True)


@command("XDEL")
def _xdel(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    deleted = server.streams.delete(arguments[1], [parse_id(a) for a in arguments[2:]])
    client.wrote = client.wrote or deleted > 0
    return deleted


@command("XTRIM")
def _xtrim(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 4)
    trim, position = _trim_options(arguments, 2)
    if position != len(arguments):
        raise CommandError("ERR syntax error")
    deleted = server.streams.trim(arguments[1], **trim)
    client.wrote = client.wrote or deleted > 0
    return deleted


@command("LOG.COMMIT")
def _log_commit(server: Server, client: Client, arguments: list[bytes]) -> Any:
    client.wrote = True  # the batch's commit below is the answer
    return server.log.tail_address


@command("LOG.INFO")
def _log_info(server: Server, client: Client, arguments: list[bytes]) -> Any:
    log = server.log
    return resp.Map({b"begin_address": log.begin_address, b"tail_address": log.tail_address,
                     b"committed_until_address": log.committed_until_address,
                     b"io_backend": log.io_backend.encode()})


async def serve(directory: str, settings: ServerSettings,
                ready: Callable[[Server], Awaitable[None] | None] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT, then commits and closes (the CLI's job)."""
    import signal

    log = FasterLog.open(directory)
    server = Server(log, settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    _logger.warning("fasterlog serving %s on %s:%d (fsync %s)", directory, settings.host,
                    server.port, settings.fsync)
    if ready is not None:
        result = ready(server)
        if asyncio.iscoroutine(result):
            await result
    await stop.wait()
    await server.close()
    log.close()
