"""Who is told when a key changes: WATCH, and readers blocked on a key.

Rules:
1. WATCH marks a client dirty on any write to a watched key, of either kind, by anyone (the
   client itself included, as Redis does); EXEC of a dirty client answers nil. Every write
   calls `Watches.touch`: the stream store's `on_write` for stream records, the string
   commands for KV writes.
2. A blocked reader (XREAD, XREADGROUP with BLOCK) waits on one future registered under each
   of its keys. A batch that wrote to keys wakes their futures after its commit (`wake`), so
   a woken reader finds the entries visible. The woken reader looks again: it may find that
   another reader took the entries first, and then waits on.
3. A wait's registration is undone when the wait ends, however it ends (woken, timed out,
   cancelled because the client left): no future outlives its reader.
Not thread-safe: the server calls both from its event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .session import Client

__all__ = ["BlockedReaders", "Watches"]


class Watches:
    """WATCH: per key, the clients watching it."""

    def __init__(self) -> None:
        self._watchers: dict[bytes, set[Client]] = {}

    def touch(self, key: bytes) -> None:
        """A write changed `key`: transactions watching it will fail."""
        if not self._watchers:  # the common case: nobody watches (every write calls this)
            return
        watchers = self._watchers.get(key)
        if watchers:
            for watcher in watchers:
                watcher.dirty = True

    def touch_all(self) -> None:
        """Every key may have changed (a reload of the committed state, recovery.py)."""
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.dirty = True

    def watch(self, client: Client, keys: list[bytes]) -> None:
        for key in keys:
            self._watchers.setdefault(key, set()).add(client)
            client.watched.add(key)

    def unwatch(self, client: Client) -> None:
        """Forgets every key `client` watches, and that it saw one change."""
        for key in client.watched:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._watchers[key]
        client.watched.clear()
        client.dirty = False


class BlockedReaders:
    """Per key, the futures of the readers blocked on it."""

    def __init__(self) -> None:
        self._waiters: dict[bytes, set[asyncio.Future[None]]] = {}
        # Readers waiting now: writers read it before calling wake (the common case: none).
        self.blocked_count = 0

    async def wait(self, keys: list[bytes], timeout_s: float | None) -> bool:
        """Waits until a write to one of `keys` is committed (True) or `timeout_s` passes
        (False; None waits forever)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._waiters.setdefault(key, set()).add(waiter)
        self.blocked_count += 1
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return False
        finally:
            self.blocked_count -= 1
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]
        return True

    def wake(self, keys: Iterable[bytes]) -> None:
        """Writes to `keys` are committed: their readers look again."""
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def wake_all(self) -> None:
        """Every reader looks again (the state was reloaded, recovery.py)."""
        self.wake(list(self._waiters))

    def waiting_count(self, key: bytes) -> int:
        """How many readers are blocked on `key` now."""
        return len(self._waiters.get(key, ()))
