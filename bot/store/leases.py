"""Who is doing what across processes: lease owners and the keys they hold.

A lease (a row of `leases`) says one owner is at work on a key until it expires: 'story:<channel id>' (its
one generation at a time), 'summary:<story id>', 'delivery:<generation id>', and 'gateway:<count>:<ids>'
(a process's shards of the bot's Discord events). An owner is "host:pid:token"; on this host a dead pid
frees its leases at once, elsewhere only the expiry can tell.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence


def _machine() -> str:
    """This host's name, and its pid namespace where Linux tells it: containers sharing a hostname do not
    share pids, so a pid is only checked within its own namespace."""
    try:
        return f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


HOST = _machine()
_LIVE: set[str] = set()  # the owners alive in this process (several services may share one process)


def new_owner() -> str:
    """A lease owner for one service: "host:pid:token", alive until :func:`retire`."""
    owner = f"{HOST}:{os.getpid()}:{secrets.token_hex(6)}"
    _LIVE.add(owner)
    return owner


def retire(owner: str) -> None:
    _LIVE.discard(owner)


def owner_alive(owner: str | None) -> bool:
    """Whether the owner may still be at work. On this host a dead pid (or, in this process, a retired
    owner) says no at once; elsewhere only the lease's expiry can tell."""
    if not owner:
        return False
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
        return True
    pid = parts[1]
    if int(pid) == os.getpid():
        return owner in _LIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def live(owner: str | None, expires_at: float | None, now: float) -> bool:
    """Whether a lease held by `owner` until `expires_at` still holds at `now` (the store's clock)."""
    return owner is not None and (expires_at or 0) > now and owner_alive(owner)


def orphaned(owner: str | None, holder: str | None, expires_at: float | None, now: float) -> bool:
    """Whether work begun by `owner` is left running by nobody: its lease is another's, or no longer live."""
    return holder != owner or not live(holder, expires_at, now)


def gateway_key(shards: Sequence[int], shard_count: int) -> str:
    """'gateway:<count>:<ids>', the ids as runs ("0-3,6"): one lease for a process's shards."""
    runs: list[list[int]] = []
    for i in sorted(set(shards)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return f"gateway:{shard_count}:" + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def parse_gateway_key(key: str) -> tuple[int, set[int]]:
    _, count, ids = key.split(":", 2)
    shards: set[int] = set()
    for run in ids.split(","):
        a, _, b = run.partition("-")
        shards.update(range(int(a), int(b or a) + 1))
    return int(count), shards


def overlaps(key: str, shards: Sequence[int], shard_count: int) -> bool:
    """Whether the gateway lease `key` covers any of `shards` of `shard_count`: any other count does (Discord
    routes the events otherwise), as does a shared shard."""
    count, held = parse_gateway_key(key)
    return count != shard_count or not held.isdisjoint(shards)
