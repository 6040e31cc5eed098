"""A stand-in OpenAI-compatible server for tests: `POST /v1/chat/completions` and `GET /v1/models` over a
real socket, with the response and error shapes of the OpenAI API (as vLLM, llama.cpp's server and
LM Studio also speak it).

Tests script it: a reply (text or fn(body) -> text), and a queue of one-off steps consumed one per
request before the default reply: an HTTP status (429 with Retry-After, 5xx), a garbage body, a delay.

    with FakeOpenAI(reply="...") as server:
        server.queue(Step(status=429), Step(delay=2.0), Step(raw="not json"))
        client = openai.OpenAI(base_url=server.url, api_key="test")
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.server import LoopbackServer

DEFAULT_REPLY = "The teacher's answer."


@dataclass
class Step:
    status: int = 200
    text: str | None = None  # a 200 reply with this content instead of the default
    raw: str | None = None  # a 200 body that is not the API's JSON at all
    delay: float = 0.0  # seconds before answering
    retry_after: float | None = None  # Retry-After header on an error status


class FakeOpenAI(LoopbackServer):
    name = "stand-in OpenAI-compatible server"

    def __init__(self, reply: str | Callable[[dict], str] = DEFAULT_REPLY, api_key: str | None = None):
        super().__init__()
        self.reply = reply
        self.api_key = api_key  # when set, requests without "Bearer <api_key>" get 401
        self.steps: deque[Step] = deque()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def queue(self, *steps: Step) -> None:
        self.steps.extend(steps)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._chat), web.get("/v1/models", self._models)]

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "teacher", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "could not parse the JSON body", "invalid_request_error")
        self.requests.append(body)
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return _error(400, "model and messages are required", "invalid_request_error")
        step = self.steps.popleft() if self.steps else Step()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(step.delay)
        finally:
            self.in_flight -= 1
        if step.status != 200:
            headers = {"Retry-After": f"{step.retry_after:g}"} if step.retry_after is not None else None
            kind = "rate_limit_exceeded" if step.status == 429 else "server_error"
            return _error(step.status, f"scripted {step.status}", kind, headers=headers)
        if step.raw is not None:
            return web.Response(text=step.raw, content_type="application/json")
        text = (
            step.text if step.text is not None else (self.reply(body) if callable(self.reply) else self.reply)
        )
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text.split()),
                    "total_tokens": prompt_tokens + len(text.split()),
                },
            }
        )


def _error(status: int, message: str, kind: str, code: str | None = None, headers=None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)
