"""A stand-in Ollama server for tests and benchmarks: the documented REST API over a real socket.

It speaks what `ollama` clients use (docs/api.md): blobs HEAD/POST with a digest check, create, show,
tags, generate and chat with NDJSON streaming. Tests script it per model: what it answers, how fast it
streams, an HTTP error, or an `{"error": ...}` line in the middle of a 200 stream. Every request is
recorded, and non-raw generate requests are rendered through the model's TEMPLATE, so a test can see
the exact prompt a model would receive.

    with FakeOllama() as server:
        server.add_model("writer", template=...)
        server.script("writer", text="<reasoning>…</reasoning><answer>…</answer>", tokens_per_second=50)
        client = ollama.Client(host=server.url)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from pipeline.modelfile import gotemplate
from tests.fakes.server import LoopbackServer

DEFAULT_TEXT = (
    "<reasoning>The heroine hesitates; the storm makes her decision for her.</reasoning>"
    "<answer>She stepped out into the rain and did not look back.</answer>"
)


@dataclass
class Script:
    """How a model answers: fixed text or a function of the request body, and how it streams."""

    text: str | Callable[[dict], str] = DEFAULT_TEXT
    tokens_per_second: float | None = None  # None: as fast as possible
    error_after: int | None = None  # send an {"error"} line after this many chunks
    error_message: str = "an error was encountered while running the model"
    http_status: int | None = None  # answer the request with this status and an error body
    http_status_times: int | None = None  # only the first N requests get http_status (None: all)
    first_token_delay: float = 0.0


@dataclass
class Model:
    name: str
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict = field(default_factory=dict)
    family: str = "qwen2"
    adapters: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    from_: str | None = None


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tokens(text: str) -> list[str]:
    """Split text into word-sized pieces, whitespace kept, as a model's stream would deliver it."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


class FakeOllama(LoopbackServer):
    name = "stand-in Ollama server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.models: dict[str, Model] = {}
        self.blobs: dict[str, bytes] = {}
        self.scripts: dict[str, Script] = {}
        self.default_script = Script()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, json body or {})
        self.rendered: list[str] = []  # prompts as the model's TEMPLATE rendered them
        self.create_error: str | None = None  # refuse every create with this message (HTTP 400)
        self.in_flight = 0
        self.max_in_flight = 0

    # --- scripting -----------------------------------------------------------------------------
    def add_model(self, name: str, **kw) -> Model:
        name = _full(name)
        self.models[name] = Model(name=name, **kw)
        return self.models[name]

    def script(self, model: str | None = None, **kw) -> Script:
        s = Script(**kw)
        if model is None:
            self.default_script = s
        else:
            self.scripts[_full(model)] = s
        return s

    def calls(self, path: str) -> list[dict]:
        return [body for _, p, body in self.requests if p == path]

    # --- serving -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", lambda r: web.Response(text="Ollama is running")),
            web.get("/api/version", lambda r: web.json_response({"version": "0.0.0-fake"})),
            web.head("/api/blobs/{digest}", self._blob_head),
            web.post("/api/blobs/{digest}", self._blob_post),
            web.post("/api/create", self._create),
            web.post("/api/show", self._show),
            web.get("/api/tags", self._tags),
            web.post("/api/generate", self._generate),
            web.post("/api/chat", self._chat),
        ]

    # --- handlers ----------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            body = {"_invalid": True}
        self.requests.append((request.method, request.path, body))
        return body

    async def _blob_head(self, request: web.Request) -> web.Response:
        self.requests.append(("HEAD", request.path, {}))
        return web.Response(status=200 if request.match_info["digest"] in self.blobs else 404)

    async def _blob_post(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, {}))
        digest = request.match_info["digest"]
        data = await request.read()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            return _error(400, "digest mismatch")
        self.blobs[digest] = data
        return web.Response(status=201)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        name = body.get("model") or ""
        if self.create_error:
            return _error(400, self.create_error)
        if not name:
            return _error(400, "model is required")
        for digest in [*(body.get("files") or {}).values(), *(body.get("adapters") or {}).values()]:
            if digest not in self.blobs:
                return _error(400, f"blob {digest} not found: upload it first")
        base = body.get("from")
        if base and _full(base) not in self.models:
            return _error(404, f"model '{base}' not found")
        if not base and not body.get("files"):
            return _error(400, "neither 'from' nor 'files' was specified")
        parent = self.models.get(_full(base)) if base else None
        self.models[_full(name)] = Model(
            name=_full(name),
            template=body.get("template") or (parent.template if parent else "{{ .Prompt }}"),
            system=body.get("system") or (parent.system if parent else ""),
            parameters={**(parent.parameters if parent else {}), **(body.get("parameters") or {})},
            family=parent.family if parent else "qwen2",
            adapters=list((body.get("adapters") or {}).values()),
            files=dict(body.get("files") or {}),
            from_=base,
        )
        lines = [{"status": "using existing layer"}, {"status": "writing manifest"}, {"status": "success"}]
        if body.get("stream") is False:
            return web.json_response(lines[-1])
        return await _ndjson(request, lines)

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        m = self.models.get(_full(body.get("model") or body.get("name") or ""))
        if m is None:
            return _error(404, f"model '{body.get('model')}' not found")
        params = "\n".join(
            f"{k} {x}" for k, v in m.parameters.items() for x in (v if isinstance(v, list) else [v])
        )
        modelfile = f'FROM {m.from_ or m.name}\nTEMPLATE """{m.template}"""\n'
        modelfile += f'SYSTEM """{m.system}"""\n' if m.system else ""  # as `ollama show --modelfile`
        modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
        return web.json_response(
            {
                "modelfile": modelfile,
                "template": m.template,
                "system": m.system,
                "parameters": params,
                "details": {"format": "gguf", "family": m.family, "families": [m.family]},
                "model_info": {"general.architecture": m.family},
                "capabilities": ["completion"],
            }
        )

    async def _tags(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, {}))
        models = [
            {"name": m.name, "model": m.name, "size": 1, "digest": "0" * 64} for m in self.models.values()
        ]
        return web.json_response({"models": models})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        model = self.models.get(_full(body.get("model") or ""))
        if model is None:
            return _error(404, f"model '{body.get('model')}' not found, try pulling it first")
        if bad := _bad_keep_alive(body):
            return _error(400, bad)
        if body.get("raw"):
            rendered = body.get("prompt", "")
        else:
            values = {"Prompt": body.get("prompt", ""), "System": body.get("system") or model.system,
                      "Response": ""}  # fmt: skip
            rendered = gotemplate.render(body.get("template") or model.template, values)
        self.rendered.append(rendered)
        return await self._stream(request, body, model, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        model = self.models.get(_full(body.get("model") or ""))
        if model is None:
            return _error(404, f"model '{body.get('model')}' not found, try pulling it first")
        if bad := _bad_keep_alive(body):
            return _error(400, bad)
        self.rendered.append("\n".join(m.get("content", "") for m in body.get("messages", [])))
        return await self._stream(request, body, model, chat=True)

    async def _stream(self, request: web.Request, body: dict, model: Model, chat: bool) -> web.StreamResponse:
        script = self.scripts.get(model.name, self.default_script)
        if script.http_status and (script.http_status_times is None or script.http_status_times > 0):
            if script.http_status_times is not None:
                script.http_status_times -= 1
            return _error(script.http_status, script.error_message)
        text = script.text(body) if callable(script.text) else script.text
        pieces = tokens(text)
        num_predict = (body.get("options") or {}).get("num_predict")
        done_reason = "stop"
        if num_predict and num_predict > 0 and len(pieces) > num_predict:
            pieces, done_reason = pieces[:num_predict], "length"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic_ns()
        try:
            if body.get("stream") is False:
                await asyncio.sleep(script.first_token_delay + _delay(script) * len(pieces))
                return web.json_response(_final(model.name, "".join(pieces), chat, done_reason, started,
                                                len(pieces), body))  # fmt: skip
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await asyncio.sleep(script.first_token_delay)
            for i, piece in enumerate(pieces):
                if script.error_after is not None and i >= script.error_after:
                    await resp.write(json.dumps({"error": script.error_message}).encode() + b"\n")
                    return resp
                await asyncio.sleep(_delay(script))
                await resp.write(json.dumps(_chunk(model.name, piece, chat)).encode() + b"\n")
            final = _final(model.name, "", chat, done_reason, started, len(pieces), body)
            await resp.write(json.dumps(final).encode() + b"\n")
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1


def _full(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _delay(script: Script) -> float:
    return 1.0 / script.tokens_per_second if script.tokens_per_second else 0.0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


_GO_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|[-+]?0")


def _bad_keep_alive(body: dict) -> str | None:
    """Why Ollama would refuse the request's keep_alive (api.Duration: a number of seconds, or a string
    Go's time.ParseDuration reads), else None."""
    value = body.get("keep_alive")
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    if not isinstance(value, str):
        return f"Unsupported type: '{type(value).__name__}'"
    if _GO_DURATION.fullmatch(value):
        return None
    if re.fullmatch(r"[-+]?[\d.]+", value):
        return f'time: missing unit in duration "{value}"'
    return f'time: invalid duration "{value}"'


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def _chunk(model: str, piece: str, chat: bool) -> dict:
    out: dict = {"model": model, "created_at": _now(), "done": False}
    if chat:
        out["message"] = {"role": "assistant", "content": piece}
    else:
        out["response"] = piece
    return out


def _final(model: str, text: str, chat: bool, reason: str, started: int, count: int, body: dict) -> dict:
    out = _chunk(model, text, chat)
    elapsed = time.monotonic_ns() - started
    prompt = body.get("prompt") or " ".join(m.get("content", "") for m in body.get("messages", []))
    out.update(
        done=True,
        done_reason=reason,
        total_duration=elapsed,
        load_duration=0,
        prompt_eval_count=len(prompt.split()),
        prompt_eval_duration=0,
        eval_count=count,
        eval_duration=elapsed,
    )
    return out


async def _ndjson(request: web.Request, lines: list[dict]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(json.dumps(line).encode() + b"\n")
    await resp.write_eof()
    return resp
