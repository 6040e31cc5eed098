"""The fake's world: guilds, channels, roles, users and their uploads, as Discord describes them."""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field

DISCORD_EPOCH_MS = 1_420_070_400_000
CONTENT_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
CUSTOM_ID_LIMIT = 100
SUPPRESS_EMBEDS, EPHEMERAL, LOADING = 1 << 2, 1 << 6, 1 << 7
LINK = re.compile(r"https?://[^\s<>]+")
MANAGE_MESSAGES = 1 << 13
PUBLIC_THREAD = 11
CREATE_PUBLIC_THREADS, SEND_MESSAGES_IN_THREADS = 1 << 35, 1 << 38
# View channel, send messages, embed links, attach files, read history, add reactions, use app commands.
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 31)


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": None if self.bot else self.name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> dict:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Channel:
    id: int
    name: str
    guild_id: int
    position: int = 0
    type: int = 0  # GUILD_TEXT; PUBLIC_THREAD (11) for a thread
    parent_id: int | None = None  # a thread's channel
    owner_id: int | None = None  # a thread's creator

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
        }
        if self.type == PUBLIC_THREAD:
            data |= {
                "owner_id": str(self.owner_id),
                "message_count": 0,
                "member_count": 1,
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 10080,
                    "locked": False,
                    "archive_timestamp": iso(time.time()),
                },
            }
        return data


@dataclass
class Guild:
    id: int
    name: str
    roles: dict[str, Role] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    members: dict[int, list[int]] = field(default_factory=dict)  # user id -> role ids (without @everyone)

    @property
    def everyone(self) -> Role:
        return next(r for r in self.roles.values() if r.id == self.id)

    def permissions(self, user: User) -> int:
        """What Discord computes for `member.permissions` in an interaction (no channel overwrites here)."""
        perms = self.everyone.permissions
        for role in self.roles.values():
            if role.id in self.members.get(user.id, []):
                perms |= role.permissions
        return perms

    def member_payload(self, user: User, with_permissions: bool = False) -> dict:
        data = {
            "user": user.payload(),
            "roles": [str(r) for r in self.members.get(user.id, [])],
            "joined_at": iso(time.time() - 86_400),
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_permissions:
            data["permissions"] = str(self.permissions(user))
        return data


@dataclass
class Upload:
    """A file a user attaches to a slash command's attachment option (`send_slash_command(..., {"file":
    Upload("story.json", data)})`). Discord reports its `size` in the interaction and serves its bytes from
    its CDN (here: GET /attachments/<id>/<name>, no authorisation, as the CDN)."""

    filename: str
    data: bytes
    content_type: str = "application/json"
    size: int | None = None  # what the interaction says (None: the real size)
    id: int = 0


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def wall_clock(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)
