"""Connection commands: PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT, RESET.

They read and change the client's session (session.Client): its authentication, protocol and
name. Passwords are compared in constant time (ServerContext.check_password).
"""

from __future__ import annotations

from typing import Any

from .. import resp
from ..context import ServerContext
from ..errors import CommandError
from ..session import Client
from .base import OK, QUIT, REDIS_VERSION, arity, integer


def ping(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return arguments[1] if len(arguments) > 1 else resp.SimpleString(b"PONG")


def echo(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
    return arguments[1]


def quit(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return QUIT


def auth(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
    if not context.settings.requirepass:
        raise CommandError("ERR AUTH <password> called without any password configured for "
                           "the default user. Are you sure your configuration is correct?")
    if len(arguments) > 3 or (len(arguments) == 3 and arguments[1] != b"default") or \
            not context.check_password(arguments[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    client.authenticated = True
    return OK


def hello(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    protocol = client.protocol
    position = 1
    if len(arguments) > 1:
        protocol = integer(arguments[1])
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        position = 2
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"AUTH" and position + 2 < len(arguments):
            auth(context, client, [b"AUTH", arguments[position + 1], arguments[position + 2]])
            position += 3
        elif option == b"SETNAME" and position + 1 < len(arguments):
            client.name = arguments[position + 1]
            position += 2
        else:
            raise CommandError("ERR Syntax error in HELLO option "
                               f"'{option.decode(errors='replace')}'")
    if not client.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, "
                           "otherwise the HELLO <proto> AUTH <user> <pass> option can be used")
    client.protocol = protocol
    return resp.Map({b"server": b"redis", b"version": REDIS_VERSION, b"proto": protocol,
                     b"id": client.id, b"mode": b"standalone", b"role": b"master",
                     b"modules": []})


def select(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
    if integer(arguments[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


def client_(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
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
    raise CommandError("ERR unknown subcommand or wrong number of arguments for "
                       f"'CLIENT|{sub.decode(errors='replace').lower()}'")


def reset(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    client.multi, client.multi_error = None, False
    context.watches.unwatch(client)
    client.protocol, client.name = 2, None
    client.authenticated = not context.settings.requirepass
    return resp.SimpleString(b"RESET")
