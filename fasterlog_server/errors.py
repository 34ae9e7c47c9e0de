"""Exceptions raised by the service package. Every one is a fasterlog FasterLogError.

    FasterLogError (fasterlog.errors)
    └── ServiceError                          a service operation failed
        ├── RemoteProtocolError (ValueError)  the peer sent bytes that break RESP or a limit
        └── LocalProtocolError                our own misuse of the codec: a value RESP cannot
                                              carry, or a reader used after it failed

RemoteProtocolError is the peer's fault: the server replies `-ERR <message>` and closes the
connection. Its message is the Redis one where Redis has one ("Protocol error: invalid bulk
length"), so clients and people who know Redis recognise it; the operation ("Protocol error")
still comes first, as everywhere in fasterlog. LocalProtocolError is a bug in our own code and
is never sent to a peer.
"""

from __future__ import annotations

from fasterlog.errors import FasterLogError

__all__ = ["LocalProtocolError", "RemoteProtocolError", "ServiceError"]


class ServiceError(FasterLogError):
    """Base of the service package's errors."""


class RemoteProtocolError(ServiceError, ValueError):
    """The peer sent malformed RESP, or input above one of the named limits.

    The reader that raised it is unusable afterwards: the connection must be closed.
    """


class LocalProtocolError(ServiceError):
    """Our own misuse: encoding a value RESP cannot carry, or using a reader after it failed."""
