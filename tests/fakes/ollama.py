"""A stand-in Ollama server for tests and benchmarks: the documented REST API over a real socket.

It speaks what `ollama` clients use (docs/api.md): blobs HEAD/POST with a digest check, create, show,
tags, generate and chat with NDJSON streaming, and push with the registry behind it (`Registry`: the
statuses and errors of server/images.go PushModel, server/upload.go and server/routes.go PushHandler /
WhoamiHandler). Tests script it per model: what it answers, how fast it
streams, an HTTP error, or an `{"error": ...}` line in the middle of a 200 stream. Every request is
recorded, and every prompt is rendered as Ollama (v0.33) renders it, so a test can see the exact text a
model would receive: `raw` generate requests as sent; the others through the template Ollama selects
(pipeline/modelfile/selection.py, read from `server/images.go`): the GGUF's own `tokenizer.chat_template`
(read from the model layer's blob, rendered with Jinja as llama-server does) when Ollama prefers it to
the TEMPLATE or there is no TEMPLATE, else the Go TEMPLATE (contract/modelfile/gotemplate.py).
`OLLAMA_GO_TEMPLATE` in `environ` (the server's environment; unset by default) is honoured as upstream.

    with FakeOllama() as server:
        server.add_model("writer", template=...)
        server.script("writer", text="<reasoning>…</reasoning><answer>…</answer>", tokens_per_second=50)
        client = ollama.Client(host=server.url)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from contract.modelfile import gotemplate, inspect
from pipeline.modelfile import selection
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
    honour_stop: bool = True  # False: a server that ignores the stop option (the client must stop reading)


QUANTIZE_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_K_S", "Q4_K_M", "Q4_K"}  # Ollama v0.33
REPEAT_LIMIT = 30  # identical pieces in a row Ollama streams before it ends the stream
DEFAULT_TEMPLATE = "{{ .Prompt }}"  # what Ollama shows and renders for a model without a TEMPLATE


@dataclass
class Model:
    name: str
    template: str | None = None  # the TEMPLATE layer; None: the model has none
    system: str = ""
    parameters: dict = field(default_factory=dict)
    family: str = "qwen2"
    adapters: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    from_: str | None = None
    chat_template: str | None = None  # tokenizer.chat_template of the model layer's GGUF
    bos_token: str = ""
    eos_token: str = ""

    def uses_chat_template(self, environ: Mapping[str, str]) -> bool:
        """Ollama's choice for non-raw requests: the GGUF chat template (else the Go TEMPLATE)."""
        return selection.uses_chat_template(self.template, self.chat_template, environ)

    def shown_template(self, environ: Mapping[str, str]) -> str:
        """/api/show's `template`: the one selected (`selectedModelTemplate`)."""
        if self.chat_template and self.uses_chat_template(environ):
            return self.chat_template
        return self.template or DEFAULT_TEMPLATE


def gguf_chat_template(data: bytes) -> tuple[str | None, str, str]:
    """(tokenizer.chat_template, bos token, eos token) of a GGUF model blob; Nones for anything else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.gguf"
        path.write_bytes(data)
        try:
            fields = inspect.gguf_fields(path)
        except ValueError:
            return None, "", ""
    tokens = fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        i = fields.get(key)
        return (
            str(tokens[i]) if isinstance(tokens, list) and isinstance(i, int) and 0 <= i < len(tokens) else ""
        )

    template = fields.get("tokenizer.chat_template")
    return (
        (template if isinstance(template, str) else None),
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
    )


def model_gguf(chat_template: str | None, bos: str = "", eos: str = "<|im_end|>") -> bytes:
    """The bytes of a tiny GGUF model layer (metadata only) carrying this chat template."""
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        w = gguf.GGUFWriter(str(path), "qwen2")
        tokens = [t for t in ("<unk>", bos, eos) if t]
        w.add_token_list(tokens)
        if bos:
            w.add_bos_token_id(tokens.index(bos))
        w.add_eos_token_id(tokens.index(eos))
        if chat_template is not None:
            w.add_chat_template(chat_template)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def render_jinja(template: str, messages: list[dict], tools: list | None, bos: str, eos: str) -> str:
    """A chat template rendered as llama-server renders it: Hugging Face's environment (its Jinja port
    has the same globals), `messages`, `tools`, a generation prompt, and today's date for strftime_now."""
    from contract.chat_template import render_jinja as render

    extra = {"tools": tools} if tools else {}
    return render(
        template, messages, True, dt.date.today().isoformat(), bos_token=bos, eos_token=eos, **extra
    )


@dataclass
class Registry:
    """The registry behind /api/push, as Ollama's push meets it: whether the server is signed in (its key on
    an ollama.com account), the namespaces that account may push to, the layers already taken, and a
    connection that drops after some layers (the layers sent before stay, as a registry keeps blobs)."""

    signed_in: bool = True
    namespaces: set[str] = field(default_factory=lambda: {"you"})
    signin_url: str = "https://ollama.com/connect?name=fake&key=AAAA"
    drop_after_layers: int | None = None  # the upload connection is lost after this many new layers
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, list[str]] = field(default_factory=dict)  # full name -> layer digests


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

    def __init__(self, host: str = "127.0.0.1", port: int = 0, environ: Mapping[str, str] | None = None):
        super().__init__(host, port)
        # the server's environment (OLLAMA_GO_TEMPLATE); by default one without it, as Ollama ships
        self.environ: Mapping[str, str] = {} if environ is None else environ
        self.models: dict[str, Model] = {}
        self.blobs: dict[str, bytes] = {}
        self.scripts: dict[str, Script] = {}
        self.default_script = Script()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, json body or {})
        self.rendered: list[str] = []  # prompts as the model would read them (see the module doc)
        self.create_error: str | None = None  # refuse every create with this message (HTTP 400)
        self.in_flight = 0
        self.max_in_flight = 0
        self.dead = False  # die(): the machine went away
        self._streams: set = set()  # the transports of the streams being written
        self._loaded: dict[str, float] = {}  # model -> when its keep_alive ends (for /api/ps)
        self.registry = Registry()

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

    def die(self) -> None:
        """The machine goes away: it stops listening and every stream being written is cut off (the
        TCP connection reset), as when an Ollama host crashes or loses power mid-passage."""

        def now() -> None:
            self.dead = True
            if self._site is not None and self._site._server is not None:
                self._site._server.close()  # type: ignore[union-attr]
            for transport in list(self._streams):
                transport.abort()

        self._loop.call_soon_threadsafe(now)  # type: ignore[union-attr]

    def revive(self) -> None:
        """The machine is back, on the same port."""
        from aiohttp import web as _web

        async def listen() -> None:
            self._site = _web.TCPSite(self._runner, self.host, self.port)  # type: ignore[arg-type]
            await self._site.start()
            self.dead = False

        asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)  # type: ignore[arg-type]

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
            web.get("/api/ps", self._ps),
            web.post("/api/generate", self._generate),
            web.post("/api/chat", self._chat),
            web.post("/api/me", self._me),
            web.post("/api/push", self._push),
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
        quantize = str(body.get("quantize") or "").upper()
        if quantize and quantize not in QUANTIZE_TYPES:  # fs/ggml/type.go ParseFileType
            return _error(
                400,
                f"unsupported quantization type {quantize} - supported types are "
                f"{', '.join(sorted(QUANTIZE_TYPES))}",
            )
        base = body.get("from")
        if base and _full(base) not in self.models:
            return _error(404, f"model '{base}' not found")
        if not base and not body.get("files"):
            return _error(400, "neither 'from' nor 'files' was specified")
        parent = self.models.get(_full(base)) if base else None
        files = dict(body.get("files") or {})
        if files:  # the model layer is the GGUF uploaded; its chat template comes with it
            layer = gguf_chat_template(self.blobs[next(iter(files.values()))])
        else:
            layer = (parent.chat_template, parent.bos_token, parent.eos_token) if parent else (None, "", "")
        self.models[_full(name)] = Model(
            name=_full(name),
            template=body.get("template") or (parent.template if parent else None),
            system=body.get("system") or (parent.system if parent else ""),
            parameters={**(parent.parameters if parent else {}), **(body.get("parameters") or {})},
            family=parent.family if parent else "qwen2",
            adapters=list((body.get("adapters") or {}).values()),
            files=files,
            from_=base,
            chat_template=layer[0],
            bos_token=layer[1],
            eos_token=layer[2],
        )
        lines = [{"status": "using existing layer"}, {"status": "writing manifest"}, {"status": "success"}]
        if body.get("stream") is False:
            return web.json_response(lines[-1])
        return await _ndjson(request, lines)

    async def _me(self, request: web.Request) -> web.Response:
        """WhoamiHandler: the ollama.com account the server is signed in to, else 401 and a sign-in URL."""
        self.requests.append(("POST", request.path, {}))
        if not self.registry.signed_in:
            return web.json_response(
                {"error": "unauthorized", "signin_url": self.registry.signin_url}, status=401
            )
        return web.json_response({"name": sorted(self.registry.namespaces)[0]})

    async def _push(self, request: web.Request) -> web.StreamResponse:
        """PushHandler + PushModel: manifest, each layer ("pushing <digest[7:19]>" with byte counts; a
        layer the registry has is reported complete at once), the manifest, "success"; a failure is an
        {"error"} line in the stream (or an HTTP error with stream false)."""
        body = await self._json(request)
        name = body.get("model") or body.get("name") or ""
        if not name:
            return _error(400, "model is required")
        lines: list[dict] = [{"status": "retrieving manifest"}]
        lines += self._push_lines(_full(name), bool(body.get("insecure")))
        if body.get("stream") is False:
            if "error" in lines[-1]:
                return _error(500, lines[-1]["error"])
            return web.json_response(lines[-1])
        return await _ndjson(request, lines)

    def _push_lines(self, name: str, insecure: bool) -> list[dict]:
        reg, parts = self.registry, name.split("://", 1)
        if len(parts) == 2 and parts[0] == "http" and not insecure:
            return [{"error": "insecure protocol http"}]
        model = self.models.get(name)
        if model is None:
            missing = (
                f"open /root/.ollama/models/manifests/{name.replace(':', '/')}: no such file or directory"
            )
            return [{"status": "couldn't retrieve manifest"}, {"error": missing}]
        namespace = parts[-1].split("/")[-2] if "/" in parts[-1] else "library"
        if not reg.signed_in or namespace not in reg.namespaces:
            return [{"error": "unauthorized: access denied"}]
        layers = [*model.files.values(), *model.adapters]
        config = json.dumps({"template": model.template, "parameters": model.parameters}).encode()
        layers.append(f"sha256:{hashlib.sha256(config).hexdigest()}")
        lines: list[dict] = []
        sent = 0
        for digest in layers:
            size = len(self.blobs.get(digest, config))
            status = {"status": f"pushing {digest[7:19]}", "digest": digest, "total": size}
            if digest in reg.blobs:
                lines.append({**status, "completed": size})
                continue
            if reg.drop_after_layers is not None and sent >= reg.drop_after_layers:
                lines.append({**status, "completed": size // 2})
                return [
                    *lines,
                    {
                        "error": f'Put "https://registry.ollama.ai/v2/{parts[-1].split(":")[0]}/blobs/'
                        f'uploads/": read: connection reset by peer'
                    },
                ]
            lines += [{**status, "completed": size // 2}, {**status, "completed": size}]
            reg.blobs.add(digest)
            sent += 1
        reg.manifests[name] = layers
        return [*lines, {"status": "pushing manifest"}, {"status": "success"}]

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        m = self.models.get(_full(body.get("model") or body.get("name") or ""))
        if m is None:
            return _error(404, f"model '{body.get('model')}' not found")
        params = "\n".join(
            f"{k} {x}" for k, v in m.parameters.items() for x in (v if isinstance(v, list) else [v])
        )
        shown = m.shown_template(self.environ)
        modelfile = f"FROM {m.from_ or m.name}\n" + (f'TEMPLATE """{shown}"""\n' if m.template else "")
        modelfile += f'SYSTEM """{m.system}"""\n' if m.system else ""  # as `ollama show --modelfile`
        modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
        return web.json_response(
            {
                "modelfile": modelfile,
                "template": shown,
                "system": m.system,
                "parameters": params,
                "details": {"format": "gguf", "family": m.family, "families": [m.family]},
                "model_info": {"general.architecture": m.family},
                "capabilities": ["completion", *sorted(self._capabilities(m))],
            }
        )

    async def _tags(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, {}))
        models = [
            {"name": m.name, "model": m.name, "size": 1, "digest": "0" * 64} for m in self.models.values()
        ]
        return web.json_response({"models": models})

    async def _ps(self, request: web.Request) -> web.Response:
        """The models in memory (a model stays loaded for its keep_alive, 5 minutes by default, after its
        last request), as Ollama's /api/ps lists them."""
        self.requests.append(("GET", request.path, {}))
        now = time.time()
        models = []
        for name, until in sorted(self._loaded.items()):
            m = self.models.get(name)
            if until <= now or m is None:
                continue
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": 1,
                    "digest": "0" * 64,
                    "size_vram": 1,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": m.family,
                        "families": [m.family],
                    },
                    "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(until, 4e9))),
                    "context_length": int(m.parameters.get("num_ctx", 4096)),
                }
            )
        return web.json_response({"models": models})

    def _capabilities(self, m: Model) -> set[str]:
        if m.chat_template and m.uses_chat_template(self.environ):
            return selection.chat_template_capabilities(m.chat_template)
        return selection.go_template_capabilities(m.template or DEFAULT_TEMPLATE)

    def _render(self, m: Model, messages: list[dict], tools: list | None = None) -> str:
        """The prompt Ollama gives the model for chat messages, through the template it selects."""
        if m.chat_template and m.uses_chat_template(self.environ):
            return render_jinja(m.chat_template, messages, tools, m.bos_token, m.eos_token)
        return gotemplate.execute(m.template or DEFAULT_TEMPLATE, messages, tools)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        model = self.models.get(_full(body.get("model") or ""))
        if model is None:
            return _error(404, f"model '{body.get('model')}' not found, try pulling it first")
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            return _error(400, "raw mode does not support template, system, or context")
        if bad := _bad_keep_alive(body):
            return _error(400, bad)
        if body.get("raw"):
            rendered = body.get("prompt", "")
        else:
            system = body.get("system") or model.system
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": body.get("prompt", "")})
            if body.get("template"):  # a request's own TEMPLATE is executed directly
                rendered = gotemplate.execute(body["template"], messages)
            else:
                rendered = self._render(model, messages)
        self.rendered.append(rendered)
        return await self._stream(request, body, model, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        model = self.models.get(_full(body.get("model") or ""))
        if model is None:
            return _error(404, f"model '{body.get('model')}' not found, try pulling it first")
        if bad := _bad_keep_alive(body):
            return _error(400, bad)
        think = body.get("think")
        if think and "thinking" not in self._capabilities(model):  # server/routes.go ChatHandler
            return _error(400, f'"{body.get("model")}" does not support thinking')
        messages = list(body.get("messages") or [])
        if model.system and (not messages or messages[0].get("role") != "system"):
            messages.insert(0, {"role": "system", "content": model.system})
        self.rendered.append(self._render(model, messages, body.get("tools")))
        return await self._stream(request, body, model, chat=True)

    async def _stream(self, request: web.Request, body: dict, model: Model, chat: bool) -> web.StreamResponse:
        script = self.scripts.get(model.name, self.default_script)
        if script.http_status and (script.http_status_times is None or script.http_status_times > 0):
            if script.http_status_times is not None:
                script.http_status_times -= 1
            return _error(script.http_status, script.error_message)
        text = script.text(body) if callable(script.text) else script.text
        if script.honour_stop:
            text = _cut_at_stop(text, _stops(body, model))
        pieces = tokens(text)
        num_predict = (body.get("options") or {}).get("num_predict")
        done_reason = "stop"
        if num_predict and num_predict > 0 and len(pieces) > num_predict:
            pieces, done_reason = pieces[:num_predict], "length"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.monotonic_ns()
        self._loaded[model.name] = time.time() + _keep_alive(body.get("keep_alive"))
        if request.transport is not None:
            self._streams.add(request.transport)
        try:
            if body.get("stream") is False:
                await asyncio.sleep(script.first_token_delay + _delay(script) * len(pieces))
                return web.json_response(
                    _final(model.name, "".join(pieces), chat, done_reason, started, len(pieces), body)
                )
            resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await resp.prepare(request)
            await asyncio.sleep(script.first_token_delay)
            last, repeats = None, 0
            for i, piece in enumerate(pieces):
                if script.error_after is not None and i >= script.error_after:
                    await resp.write(json.dumps({"error": script.error_message}).encode() + b"\n")
                    return resp
                # Ollama's repeat limit (llm/llama_server.go, v0.33): a piece whose trimmed text equals the
                # one before more than 30 times in a row ends the stream, with no error and no done line.
                repeats, last = (repeats + 1, last) if piece.strip() == last else (0, piece.strip())
                if repeats > REPEAT_LIMIT:
                    await resp.write_eof()
                    return resp
                await asyncio.sleep(_delay(script))
                await resp.write(json.dumps(_chunk(model.name, piece, chat)).encode() + b"\n")
            final = _final(model.name, "", chat, done_reason, started, len(pieces), body)
            await resp.write(json.dumps(final).encode() + b"\n")
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1
            self._streams.discard(request.transport)


def _keep_alive(value) -> float:
    """Seconds a model stays loaded after a request: Ollama's keep_alive (a number of seconds or a
    duration such as "10m"; negative: for ever; 0: unloaded at once), default 5 minutes."""
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
        if not m:
            return 300.0
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float("inf") if seconds < 0 else seconds


def _stops(body: dict, model: Model) -> list[str]:
    """The request's stop list, else the model's PARAMETER stop values (Ollama: the request's replaces)."""
    stop = (body.get("options") or {}).get("stop")
    if stop is None:
        stop = model.parameters.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def _cut_at_stop(text: str, stops: list[str]) -> str:
    """As Ollama's runner does: the output ends before the first stop string, which is not returned."""
    found = [at for at in (text.find(s) for s in stops if s) if at >= 0]
    return text[: min(found)] if found else text


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
