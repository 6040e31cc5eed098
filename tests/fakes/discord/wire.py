"""Discord's wire format: JSON answers, 429s and form errors as Discord sends them, and its checks of a
message or a command."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from .world import CONTENT_LIMIT, CUSTOM_ID_LIMIT, EMBED_DESCRIPTION_LIMIT, Channel, Role, Upload, User


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py's json_or_text compares the header verbatim (no charset).
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(
        body=body, status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def too_many(retry_after: float, is_global: bool, bucket: str) -> web.Response:
    retry_after = round(max(retry_after, 0.001), 3)
    headers = {
        "Retry-After": str(max(1, int(retry_after + 0.999))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    return reply(body, 429, headers)


def form_error(errors: dict[str, tuple[str, str]]) -> web.Response:
    """Discord's 50035 Invalid Form Body: errors nested by the dotted path of each bad field."""
    nested: dict = {}
    for path, (code, message) in errors.items():
        node = nested
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return reply({"message": "Invalid Form Body", "code": 50035, "errors": nested}, 400)


def walk_components(components: list) -> list[dict]:
    out = []
    for comp in components or []:
        out.append(comp)
        out.extend(walk_components(comp.get("components", [])))
        if isinstance(comp.get("accessory"), dict):
            out.extend(walk_components([comp["accessory"]]))
    return out


def message_errors(body: dict, *, require_body: bool, files: list[str] | None = None) -> web.Response | None:
    errors: dict[str, tuple[str, str]] = {}
    content = body.get("content")
    if content is not None and len(content) > CONTENT_LIMIT:
        errors["content"] = ("BASE_TYPE_MAX_LENGTH", f"Must be {CONTENT_LIMIT} or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        errors["embeds"] = ("BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    for i, embed in enumerate(embeds):
        if len(embed.get("description") or "") > EMBED_DESCRIPTION_LIMIT:
            errors[f"embeds.{i}.description"] = (
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {EMBED_DESCRIPTION_LIMIT} or fewer in length.",
            )
        if len(embed.get("title") or "") > 256:
            errors[f"embeds.{i}.title"] = ("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
    components = body.get("components") or []
    classic = all(c.get("type") == 1 for c in components)
    if classic and len(components) > 5:
        errors["components"] = ("BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    seen: set[str] = set()
    for r, row in enumerate(components if classic else []):
        if len(row.get("components", [])) > 5:
            errors[f"components.{r}.components"] = ("BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for c, comp in enumerate(row.get("components", [])):
            where = f"components.{r}.components.{c}"
            custom_id = comp.get("custom_id")
            if custom_id is not None and len(custom_id) > CUSTOM_ID_LIMIT:
                errors[f"{where}.custom_id"] = (
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {CUSTOM_ID_LIMIT} or fewer in length.",
                )
            if custom_id is not None and custom_id in seen:
                errors[f"{where}.custom_id"] = (
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id) if custom_id is not None else None
            if comp.get("type") == 2 and comp.get("style") != 5 and custom_id is None:
                errors[f"{where}.custom_id"] = ("BASE_TYPE_REQUIRED", "This field is required")
            if len(comp.get("label") or "") > 80:
                errors[f"{where}.label"] = ("BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
    if errors:
        return form_error(errors)
    if require_body and not (
        content or embeds or components or files or body.get("sticker_ids") or body.get("poll")
    ):
        return reply({"message": "Cannot send an empty message", "code": 50006}, 400)
    return None


def guess_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, User):
        return 6
    if isinstance(value, Channel):
        return 7
    if isinstance(value, Role):
        return 8
    if isinstance(value, Upload):
        return 11
    return 3


COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def command_errors(cmd: dict) -> dict[str, tuple[str, str]]:
    errors = {}
    name = cmd.get("name", "")
    if not COMMAND_NAME.match(name) or name != name.lower():
        errors["name"] = ("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description", "")) <= 100:
        errors["description"] = ("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if len(cmd.get("options") or []) > 25:
        errors["options"] = ("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    return errors


def attachment_payload(message_id: int, index: int, name: str) -> dict:
    url = f"https://cdn.discordapp.com/attachments/0/{message_id}/{name}"
    return {"id": str(message_id + index + 1), "filename": name, "size": 0, "url": url, "proxy_url": url}


async def read_body(request: web.Request) -> tuple[Any, dict[str, bytes]]:
    """JSON bodies, or discord.py's multipart form (payload_json plus files[n]) when files are attached;
    the files as name -> bytes."""
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        files = {
            f.filename: f.file.read()
            for k, f in form.items()
            if k.startswith("files[") and hasattr(f, "filename")
        }
        return json.loads(str(form.get("payload_json", "{}"))), files
    raw = await request.read()
    return (json.loads(raw) if raw else None), {}
