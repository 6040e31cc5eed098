"""This process's leases in the store: a story's turn, a summary, a delivery, the Discord gateway.

A lease names its owner ("host:pid:token") and lapses `lease_s` after its last renewal, so a dead process
lets go of everything it held. While any is held, one heartbeat renews them all every third of that time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..store import Store
from ..store.leases import gateway_key

log = logging.getLogger(__name__)


class Leases:
    def __init__(self, store: Store, owner: str, lease_s: float):
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self._held: set[str] = set()
        self._heartbeat: asyncio.Task | None = None

    def hold(self, key: str) -> bool:
        """Take the lease `key` (False: another live owner holds it) and keep renewing it."""
        if self.store.claim(key, self.owner, self.lease_s) is not None:
            return False
        self._held.add(key)
        self._beat()
        return True

    def hold_gateway(self, shards: Sequence[int], shard_count: int) -> str | None:
        """Take the lease on shards of the Discord events; None, or the live owner of an overlapping one
        (then nothing is taken)."""
        holder = self.store.claim_gateway(shards, shard_count, self.owner, self.lease_s)
        if holder is None:
            self._held.add(gateway_key(shards, shard_count))
            self._beat()
        return holder

    def drop(self, key: str) -> None:
        """Give the lease up now, if this process holds it."""
        if key in self._held:
            self._held.discard(key)
            self.store.release(key, self.owner)

    def forget(self, key: str) -> None:
        """Stop renewing a lease the store lets go of by itself (a finished delivery)."""
        self._held.discard(key)

    def close(self) -> None:
        """Give up every lease and stop the heartbeat."""
        for key in list(self._held):
            self.drop(key)
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    def _beat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew(), name="lease-heartbeat")

    async def _renew(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease_s / 3)
            try:
                lost = self.store.renew(sorted(self._held), self.owner, self.lease_s)
            except Exception as exc:  # a locked or unreachable database: try again next beat
                log.warning("could not renew leases: %s", exc)
                continue
            for key in lost:  # stalled past the expiry and taken over: stop claiming it
                log.warning("lease %s was taken over by another process", key)
                self._held.discard(key)
