"""Register a Modelfile's model with an Ollama server through the official `ollama` client, and push it
from there to a registry.

Local FROM and ADAPTER files travel as blobs (sha256-addressed; a blob the server already has is not
sent again), then one create request carries from/files, adapters, template, system, parameters and
messages, the same fields `ollama create` would send.

A push is the server's own `/api/push` (what `ollama push` calls): the server uploads each layer to the
registry and then the manifest, streaming progress; the model is published only when the stream ends in
"success" (Ollama's PushModel sends it after the registry took the manifest). Like `ollama push`, a name
on ollama.com is first checked against the server's sign-in (`/api/me`), and the registry's
"unauthorized: access denied" is read as a namespace that is not the signed-in user's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama

from contract.modelfile import grammar
from contract.serving import resolve_host

#: The registry a name without a host is pushed to, and its other spellings (Ollama's cmd/cmd.go).
OLLAMA_REGISTRY = "registry.ollama.ai"
_OLLAMA_HOSTS = (".ollama.ai", ".ollama.com")
_MODEL_GLOBS = ("*.safetensors", "*.gguf", "*.json", "tokenizer.model", "chat_template.jinja")


class PublishError(RuntimeError):
    pass


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return f"sha256:{digest.hexdigest()}"


@dataclass
class Plan:
    """The create request a Modelfile turns into, and the local files behind it."""

    name: str
    from_: str | None
    files: dict[str, Path]
    adapters: dict[str, Path]
    template: str | None
    system: str | None
    parameters: dict[str, object]
    messages: list[dict]
    license: list[str]
    quantize: str | None = None  # the model layer quantized by the server as it creates the model


#: What `ollama create --quantize` takes (fs/ggml/type.go ParseFileType, v0.33.0-rc2; case-insensitive),
#: applied to an F16, BF16 or F32 model layer only (server/create.go), never to an adapter.
QUANTIZE = ("q8_0", "q4_K_M", "q4_K_S", "q4_K", "f16", "bf16", "f32")


def plan(modelfile: Path, name: str, quantize: str | None = None) -> Plan:
    if quantize is not None and quantize.lower() not in {q.lower() for q in QUANTIZE}:
        raise PublishError(
            f"--quantize {quantize!r} is not a type Ollama quantizes to: one of {', '.join(QUANTIZE)}"
        )
    text = grammar.read(Path(modelfile))  # decoded as Ollama decodes it (BOM, UTF-16)
    base_dir = Path(modelfile).resolve().parent
    errors = [p for p in grammar.check_text(text, base_dir) if p.severity == "error"]
    if errors:
        raise PublishError(f"{modelfile} would not work:\n" + "\n".join(map(str, errors)))
    mf = grammar.parse(text)
    from_value = mf.first("model") or ""
    from_path = _expand(from_value, base_dir)
    files = _model_files(from_path) if from_path.exists() else {}
    adapters = {}
    if adapter := mf.first("adapter"):
        path = _expand(adapter, base_dir)
        adapters = {path.name: path}
    messages = []
    for m in mf.get("message"):
        role, _, content = m.args.partition(": ")
        messages.append({"role": role, "content": content})
    return Plan(
        name=name,
        from_=None if files else from_value,
        files=files,
        adapters=adapters,
        template=mf.first("template"),
        system=mf.first("system"),
        parameters=grammar.typed_parameters(mf),
        messages=messages,
        license=[c.args for c in mf.get("license")],
        quantize=quantize,
    )


def _expand(value: str, base_dir: Path) -> Path:
    return grammar.expand_path(value, base_dir)


def _model_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {path.name: path}
    found = {p.name: p for pattern in _MODEL_GLOBS for p in sorted(path.glob(pattern))}
    if not any(n.endswith((".safetensors", ".gguf")) for n in found):
        raise PublishError(f"FROM {path}: the folder holds no .safetensors or .gguf weights")
    return found


class Publisher:
    """Uploads blobs and creates the model; `on_status` receives human-readable progress lines."""

    def __init__(self, host: str | None = None, timeout: float = 600.0):
        self.host = resolve_host(host)
        self.client = ollama.Client(host=self.host, timeout=timeout)
        self._http = httpx.Client(base_url=self.host, timeout=timeout)

    def _unreachable(self, e: Exception) -> PublishError:
        return PublishError(
            f"cannot reach the Ollama server at {self.host} ({e.__class__.__name__}): start it with "
            "`ollama serve`, or pass --host / set OLLAMA_HOST to where it runs"
        )

    def has_blob(self, digest: str) -> bool:
        try:
            return self._http.head(f"/api/blobs/{digest}").status_code == 200
        except httpx.TransportError as e:
            raise self._unreachable(e) from e

    def upload(self, path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """(digest, uploaded): the blob is sent only when the server does not have it yet."""
        digest = sha256_file(path, progress)
        if self.has_blob(digest):
            return digest, False
        try:
            sent = self.client.create_blob(path)
        except (ConnectionError, httpx.TransportError) as e:
            raise self._unreachable(e) from e
        except ollama.ResponseError as e:
            raise PublishError(f"the server refused the blob {path.name}: {e.error}") from e
        if sent != digest:
            raise PublishError(f"{path} changed while it was being uploaded: publish again")
        return digest, True

    def has_model(self, model: str) -> bool:
        """Whether the server already holds a model by this name (create would replace it)."""
        try:
            self.client.show(model)
        except (ConnectionError, httpx.TransportError) as e:
            raise self._unreachable(e) from e
        except ollama.ResponseError as e:
            if e.status_code == 404:
                return False
            raise PublishError(f"the server could not show {model!r}: {e.error}") from e
        return True

    def check_base(self, model: str) -> None:
        if not self.has_model(model):
            raise PublishError(
                f"the base model {model!r} is not on the server at {self.host}: "
                f"run `ollama pull {model}` there first"
            )

    def create(self, p: Plan, digests: dict[str, str], on_status: Callable[[str], None] = print) -> None:
        try:
            stream = self.client.create(
                model=p.name,
                from_=p.from_,
                files={n: digests[n] for n in p.files} or None,
                adapters={n: digests[n] for n in p.adapters} or None,
                template=p.template,
                system=p.system,
                parameters=p.parameters or None,
                messages=p.messages or None,
                license=p.license or None,
                quantize=p.quantize,
                stream=True,
            )
            last = None
            for update in stream:
                last = update.status
                on_status(update.status or "")
        except (ConnectionError, httpx.TransportError) as e:
            raise self._unreachable(e) from e
        except ollama.ResponseError as e:
            raise PublishError(f"the server refused to create {p.name!r}: {e.error}") from e
        if last != "success":
            raise PublishError(f"the server stopped before creating {p.name!r} (last status: {last!r})")

    def publish(self, p: Plan, on_status: Callable[[str], None] = print, progress_factory=None) -> None:
        """Check the base, upload what is missing, create. `progress_factory(path)` gives a byte callback."""
        if p.from_:
            self.check_base(p.from_)
        digests: dict[str, str] = {}
        for name, path in {**p.files, **p.adapters}.items():
            progress = progress_factory(path) if progress_factory else None
            digest, sent = self.upload(path, progress)
            digests[name] = digest
            on_status(f"{'uploaded' if sent else 'already on the server:'} {name} ({digest[:19]}…)")
        self.create(p, digests, on_status)


def _parts(name: str) -> list[str]:
    """[host/]namespace/model of a name, its scheme and tag left out."""
    bare = name.split("://", 1)[-1]
    if bare.rfind(":") > bare.rfind("/"):
        bare = bare.rsplit(":", 1)[0]
    return bare.split("/")


def push_name_error(name: str) -> str | None:
    """Why this name cannot be pushed (Ollama's naming rules, and a namespace of one's own), or None."""
    if (problem := grammar.model_name_error(name)) is not None:
        return problem
    if len(_parts(name)) < 2:
        return (
            "it has no namespace, so it would go to the registry's `library`, which only Ollama publishes "
            "to: name it YOUR_NAMESPACE/model (e.g. --name you/writer)"
        )
    return None


def registry_of(name: str) -> str:
    """The registry host a model name is pushed to (host/namespace/model:tag; default Ollama's)."""
    parts = _parts(name)
    return parts[0] if len(parts) == 3 else OLLAMA_REGISTRY


def web_page(name: str) -> str:
    """Where a pushed model is found, as `ollama push` prints it."""
    host = registry_of(name)
    short = name.split("://", 1)[-1]
    if host.endswith(_OLLAMA_HOSTS):
        short = short.removeprefix(f"{host}/").removesuffix(":latest")
        return f"https://ollama.com/{short}"
    return short


class Pusher:
    """Pushes a model the server holds to its registry; `on_progress` receives each ProgressResponse."""

    def __init__(self, publisher: Publisher):
        self.p = publisher

    def check_signed_in(self, name: str) -> None:
        """As `ollama push` does for ollama.com names: the server must be signed in (`ollama signin`)."""
        if not registry_of(name).endswith(_OLLAMA_HOSTS):
            return
        try:
            r = self.p._http.post("/api/me")
        except httpx.TransportError as e:
            raise self.p._unreachable(e) from e
        if r.status_code == 401:
            url = _json(r).get("signin_url")
            where = f", or open {url}" if url else ""
            raise PublishError(
                f"the Ollama server at {self.p.host} is not signed in to ollama.com, so it cannot push "
                f"{name!r}: run `ollama signin` on that machine{where}, then push again"
            )
        # 404 (a server older than /api/me) or 503 (the account cannot be checked now): the push says more

    def push(self, name: str, insecure: bool = False, on_progress: Callable[[object], None] = print) -> str:
        """Push `name`; returns where it is found. Raises PublishError unless the registry took it."""
        if (problem := push_name_error(name)) is not None:
            raise PublishError(f"{name!r} cannot be pushed: {problem}")
        if not self.p.has_model(name):
            raise PublishError(
                f"the server at {self.p.host} has no model named {name!r}: publish it first "
                f"(story-pipeline publish --modelfile FILE --name {name} --push)"
            )
        self.check_signed_in(name)
        last = None
        try:
            for update in self.p.client.push(name, insecure=insecure, stream=True):
                last = update.status
                on_progress(update)
        except (ConnectionError, httpx.TransportError) as e:
            raise self.p._unreachable(e) from e
        except ollama.ResponseError as e:
            raise PublishError(self._refused(name, e.error)) from e
        if last != "success":
            raise PublishError(
                f"the push of {name!r} ended before the registry took it (last status: {last!r}): nothing "
                "was published; push again (layers the registry already has are not sent twice)"
            )
        return web_page(name)

    def _refused(self, name: str, error: str) -> str:
        text = error.lower()
        namespace = _parts(name)[-2]
        if "access denied" in text or "unauthorized" in text:
            return (
                f"the registry refused {name!r} ({error}): the namespace {namespace!r} is not yours, or this "
                "server's key is not on your account; push under a namespace you own (`ollama cp` it to "
                "YOU/model), after `ollama signin` on the server"
            )
        if "insecure protocol" in text:
            return f"{name!r} names a plain-http registry: pass --insecure to push to it anyway"
        return f"the server could not push {name!r}: {error} (nothing was published)"


def _json(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
