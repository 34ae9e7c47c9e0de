"""Exceptions raised by the server package. Every failure is a fasterlog FasterLogError.

    FasterLogError (fasterlog.errors)
    └── ServiceError                          a service operation failed
        ├── RemoteProtocolError (ValueError)  the peer sent bytes that break RESP or a limit
        └── LocalProtocolError                our own misuse: of the codec (a value RESP cannot
                                              carry, a reader used after it failed), or of a
                                              connection (an event its state does not allow)

    CommandError (Exception)                  not a failure: a command's error reply, whose
                                              message is the whole Redis error text
                                              ("ERR syntax error")

RemoteProtocolError is the peer's fault: the server replies `-ERR <message>` and closes the
connection. Its message is the Redis one where Redis has one ("Protocol error: invalid bulk
length"), so clients and people who know Redis recognise it; the operation ("Protocol error")
still comes first, as everywhere in fasterlog. LocalProtocolError is a bug in our own code and
is never sent to a peer.
"""

from __future__ import annotations

from fasterlog.errors import FasterLogError

__all__ = ["CommandError", "LocalProtocolError", "RemoteProtocolError", "ServiceError"]


class ServiceError(FasterLogError):
    """Base of the service package's errors."""


class RemoteProtocolError(ServiceError, ValueError):
    """The peer sent malformed RESP, or input above one of the named limits.

    The reader that raised it is unusable afterwards: the connection must be closed.
    """


class LocalProtocolError(ServiceError):
    """Our own misuse: encoding a value RESP cannot carry, using a reader after it failed, or
    an event a connection's state does not allow (connection.py)."""


class CommandError(Exception):
    """An error reply; the message is the full Redis error text (e.g. "ERR syntax error").

    Not a FasterLogError: nothing failed, the client asked for something Redis refuses too.
    (streams.StreamError, a ValueError, is its twin for errors the stores find.)
    """
