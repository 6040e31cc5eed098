"""A stand-in Hugging Face Hub for tests: the HTTP API `huggingface_hub` calls to publish a model, over a
real socket, so the official client runs unchanged against it (`HfApi(endpoint=hub.url)`).

Read from huggingface_hub 2.4.0 (hf_api.py, _commit_api.py, lfs.py, utils/_http.py):
- `GET /api/whoami-v2` (a token's user and orgs; 401 with "Invalid credentials in Authorization header");
- `POST /api/repos/create` ({name, organization, visibility, type}; 409 when it exists, 403 for a
  namespace that is not the token's);
- `GET /api/models/{repo}/revision/{rev}` (repo_info) and `/tree/{rev}` (list_repo_tree, one page);
- `GET|HEAD /{repo}/resolve/{rev}/{path}` (hf_hub_download: X-Repo-Commit, ETag, the bytes);
- `POST /api/validate-yaml` (a README's metadata: {"errors": [{"message"}]} with 400 when invalid);
- `POST /api/models/{repo}/preupload/{rev}` (each file regular or lfs, and the oid of the file already
  there, so unchanged files are left out of the commit);
- the Git LFS batch API `POST /{repo}.git/info/lfs/objects/batch` (basic transfer: an upload and a verify
  action per object the store lacks, none for one it has) with its `PUT` upload and `POST` verify;
- `POST /api/models/{repo}/commit/{rev}` (NDJSON: header, file, lfsFile, deletedFile), applied
  atomically: every file or none.
Uploads go through LFS, not Xet: tests set HF_HUB_DISABLE_XET, as the client then falls back to LFS.
`fail_uploads` makes the n-th next LFS PUT fail (403, an expired signed URL: not retried by the client).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field

import yaml
from aiohttp import web

from tests.fakes.server import LoopbackServer

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".png", ".zip")
LICENSES = {"apache-2.0", "mit", "llama3", "llama3.1", "llama3.2", "gemma", "cc-by-4.0", "other", "unknown"}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS pointers
    commits: list[str] = field(default_factory=list)  # summaries, oldest first
    private: bool = False

    @property
    def sha(self) -> str:
        return hashlib.sha1("\n".join(self.commits).encode()).hexdigest()


@dataclass
class Token:
    user: str
    orgs: tuple[str, ...] = ()
    write: bool = True


class FakeHub(LoopbackServer):
    name = "stand-in Hugging Face Hub"

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, Token] = {"hf_writer": Token("you", ("team",))}
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content, shared by every repo
        self.fail_uploads: list[int] = []  # fail the n-th next LFS PUT (1 = the next one)
        self.puts = 0
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> Repo:
        repo = self.repos[repo_id] = Repo(dict(files), commits=["initial commit"])
        return repo

    def routes(self) -> list[web.RouteDef]:
        repo = "{ns}/{name}"
        return [
            web.get("/api/whoami-v2", self._whoami),
            web.post("/api/repos/create", self._create),
            web.post("/api/validate-yaml", self._validate),
            web.get(f"/api/models/{repo}/revision/{{rev}}", self._info),
            web.get(f"/api/models/{repo}/tree/{{rev}}", self._tree),
            web.post(f"/api/models/{repo}/preupload/{{rev}}", self._preupload),
            web.post(f"/api/models/{repo}/commit/{{rev}}", self._commit),
            web.post(f"/{repo}.git/info/lfs/objects/batch", self._batch),
            web.get(f"/{repo}/resolve/{{rev}}/{{path:.+}}", self._resolve),
            web.put("/lfs/{oid}", self._put),
            web.post("/lfs/verify", self._verify),
        ]

    # --- auth --------------------------------------------------------------------------------------
    def _token(self, request: web.Request) -> Token | None:
        self.requests.append((request.method, request.path))
        auth = request.headers.get("authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def _may_write(self, token: Token | None, namespace: str) -> web.Response | None:
        if token is None:
            return _error(401, "Invalid credentials in Authorization header")
        if namespace not in (token.user, *token.orgs) or not token.write:
            return _error(
                403, f'You don\'t have the rights to create a model under the namespace "{namespace}"'
            )
        return None

    def _repo(self, request: web.Request) -> tuple[str, Repo | None]:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        return repo_id, self.repos.get(repo_id)

    # --- handlers ----------------------------------------------------------------------------------
    async def _whoami(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token is None:
            return _error(401, "Invalid credentials in Authorization header")
        role = "write" if token.write else "read"
        orgs = [{"name": o} for o in token.orgs]
        auth = {"type": "access_token", "accessToken": {"role": role}}
        return web.json_response({"type": "user", "name": token.user, "orgs": orgs, "auth": auth})

    async def _create(self, request: web.Request) -> web.Response:
        token = self._token(request)
        body = await request.json()
        namespace = body.get("organization") or (token.user if token else "")
        if refused := self._may_write(token, namespace):
            return refused
        repo_id = f"{namespace}/{body['name']}"
        if repo_id in self.repos:
            return _error(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private")
        return web.json_response({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": uuid.uuid4().hex})

    async def _validate(self, request: web.Request) -> web.Response:
        self._token(request)
        body = await request.json()
        errors = metadata_errors(body.get("content", ""))
        return web.json_response(
            {"errors": [{"message": m} for m in errors], "warnings": []}, status=400 if errors else 200
        )

    async def _info(self, request: web.Request) -> web.Response:
        self._token(request)
        repo_id, repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        siblings = [{"rfilename": p} for p in sorted(repo.files)]
        return web.json_response(
            {"id": repo_id, "sha": repo.sha, "private": repo.private, "siblings": siblings}
        )

    async def _resolve(self, request: web.Request) -> web.Response:
        self._token(request)
        _, repo = self._repo(request)
        data = repo.files.get(request.match_info["path"]) if repo else None
        if repo is None or data is None:
            return _error(404, "Entry not found", code="EntryNotFound" if repo else "RepoNotFound")
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{git_oid(data)}"'}
        return web.Response(body=data, headers=headers)

    async def _tree(self, request: web.Request) -> web.Response:
        self._token(request)
        _, repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        entries = []
        for path, data in sorted(repo.files.items()):
            entry: dict = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
            if path in repo.lfs:
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        return web.json_response(entries)

    async def _preupload(self, request: web.Request) -> web.Response:
        token = self._token(request)
        repo_id, repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if refused := self._may_write(token, repo_id.split("/")[0]):
            return refused
        answers = []
        for f in (await request.json())["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 << 20 or b"\0" in sample
            answer = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if (old := repo.files.get(f["path"])) is not None:
                answer["oid"] = hashlib.sha256(old).hexdigest() if lfs else git_oid(old)
            answers.append(answer)
        return web.json_response({"files": answers})

    async def _batch(self, request: web.Request) -> web.Response:
        token = self._token(request)
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        if refused := self._may_write(token, repo_id.split("/")[0]):
            return refused
        objects = []
        for obj in (await request.json())["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_store:
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs/verify"},
                }
            objects.append(answer)
        return web.json_response({"transfer": "basic", "objects": objects})

    async def _put(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        data = await request.read()
        self.puts += 1
        self.fail_uploads = [n - 1 for n in self.fail_uploads]
        if 0 in self.fail_uploads:
            self.fail_uploads.remove(0)
            expired = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return web.Response(status=403, text=expired, content_type="application/xml")
        if hashlib.sha256(data).hexdigest() != request.match_info["oid"]:
            return web.Response(status=400, text="sha256 mismatch")
        self.lfs_store[request.match_info["oid"]] = data
        return web.Response(status=200)

    async def _verify(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        body = await request.json()
        stored = self.lfs_store.get(body["oid"])
        if stored is None or len(stored) != body["size"]:
            return _error(404, f"object {body['oid']} not found")
        return web.json_response({})

    async def _commit(self, request: web.Request) -> web.Response:
        token = self._token(request)
        repo_id, repo = self._repo(request)
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if refused := self._may_write(token, repo_id.split("/")[0]):
            return refused
        files, lfs, summary = dict(repo.files), set(repo.lfs), ""
        for line in (await request.read()).decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_store:
                    missing = "an LFS pointer pointed to a file that does not exist"
                    return _error(422, f"Your push was rejected because {missing}: {value['path']}")
                files[value["path"]] = self.lfs_store[value["oid"]]
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                files = {
                    p: d
                    for p, d in files.items()
                    if p != value["path"] and not p.startswith(value["path"] + "/")
                }
        repo.files, repo.lfs = files, lfs  # all at once: a refused commit changes nothing
        repo.commits.append(summary)
        oid = repo.sha
        return web.json_response(
            {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        )


def metadata_errors(content: str) -> list[str]:
    """What the Hub's model-card metadata check would refuse in a README (a subset of its schema)."""
    m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not m:
        return []
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        return [f"invalid YAML: {e}"]
    errors = []
    bases = meta.get("base_model", [])
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str) or not _REPO_ID.match(base):
            errors.append(f'"base_model" must be a model id (namespace/name), not {base!r}')
    if "license" in meta and meta["license"] not in LICENSES:
        errors.append(f'"license" must be one of [{", ".join(sorted(LICENSES))}]')
    for key in ("datasets", "tags", "language"):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            errors.append(f'"{key}" must be an array of strings')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    return errors


def _error(status: int, message: str, code: str | None = None, **extra) -> web.Response:
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    return web.json_response({"error": message, **extra}, status=status, headers=headers)
