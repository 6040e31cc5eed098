"""A run to a Hugging Face Hub repository through the official huggingface_hub client, in one commit.

What goes: the run folder's files (the PEFT adapter, its tokenizer, training.json, log and curve; never
checkpoints/), the GGUF files the user names (with the `.distance.json` verify-quant left beside a
quantized one, when it describes that file), the Modelfile, and the generated README.md (card.py).
Large files travel first (LFS or Xet, as the client and the Hub agree), then one commit adds everything:
a failure before the commit leaves the repository as it was, and the same command again sends only what
the Hub does not hold yet. Files of the repository that this push does not name are never touched; one
it would replace with other bytes is refused unless --force (a README.md this module wrote is replaced).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.hub import card as card_mod

MODELFILE = "Modelfile"
README = "README.md"


class HubError(RuntimeError):
    """A push that cannot go on or did not happen; the message says what to do."""


@dataclass
class Upload:
    repo_id: str
    files: dict[str, Path]  # path in the repository -> local file
    readme: bytes


def run_files(run_dir: Path) -> dict[str, Path]:
    """The run folder's files (not its checkpoints, hidden files or a README of its own)."""
    return {
        p.name: p
        for p in sorted(Path(run_dir).iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name != README
    }


def extra_files(
    ggufs: list[Path], modelfile: Path | None, measured: dict[str, dict] | None = None
) -> tuple[dict[str, Path], list[str]]:
    """(path in the repository -> file, the names of the GGUF models among them: not adapters); the
    verify-quant sidecars of the models go too, and into `measured` by model name."""
    from contract.modelfile import inspect
    from pipeline.export.distance import read_sidecar, sidecar_path

    files: dict[str, Path] = {}
    models = []
    for g in ggufs:
        try:
            kind = inspect.gguf_fields(g).get("general.type")
        except ValueError as e:
            raise HubError(f"{e}: give the files export-gguf / export-merged wrote") from e
        if g.name in files:
            raise HubError(f"two GGUF files are named {g.name}: rename one, they share the repository's root")
        files[g.name] = g
        if kind != "adapter":
            models.append(g.name)
            doc = read_sidecar(g)
            if doc is not None:  # verify-quant's figures for this very file (same sha256) travel with it
                files[sidecar_path(g).name] = sidecar_path(g)
                if measured is not None:
                    measured[g.name] = doc
    if modelfile is not None:
        files[MODELFILE] = modelfile
    return files, models


def prepare(run_dir: Path, inputs: card_mod.CardInputs, ggufs: list[Path], modelfile: Path | None) -> Upload:
    extra, inputs.gguf_models = extra_files(ggufs, modelfile, inputs.quant_distances)
    files = {**run_files(run_dir), **extra}
    inputs.files = sorted([*files, README])
    readme = str(card_mod.render(run_dir, inputs)).encode()
    return Upload(inputs.repo_id, files, readme)


def git_oid(data: bytes) -> str:
    """A git blob's id (what the Hub lists for a file kept in git, not LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def conflicts(upload: Upload, tree: dict[str, tuple[str, str | None]]) -> list[str]:
    """Paths this push would overwrite with other bytes (README.md aside: Publisher.readme_is_ours).
    `tree`: path -> (git oid, LFS sha256 or None)."""
    found = []
    for path, (oid, sha) in tree.items():
        local = upload.files.get(path)
        if local is None:
            continue
        same = _sha256(local) == sha if sha else git_oid(local.read_bytes()) == oid
        if not same:
            found.append(path)
    return found


class Publisher:
    """HfApi calls for one push; each Hub answer becomes a HubError with the fix."""

    def __init__(self, token: str | None = None, endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token)

    def whoami(self) -> str:
        from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

        try:
            return str(self.api.whoami()["name"])
        except LocalTokenNotFoundError as exc:
            raise HubError(
                "no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token (a write token)"
            ) from exc
        except HfHubHTTPError as e:
            raise self._refused(e, "make a write token at https://huggingface.co/settings/tokens") from e

    def readme_is_ours(self, repo_id: str) -> bool:
        import tempfile

        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory() as cache:  # read once: nothing left in the user's Hub cache
            path = hf_hub_download(
                repo_id, README, endpoint=self.api.endpoint, token=self.api.token, cache_dir=cache
            )
            return card_mod.MARKER in Path(path).read_text(encoding="utf-8", errors="replace")

    def tree(self, repo_id: str) -> dict[str, tuple[str, str | None]]:
        from huggingface_hub import RepoFile

        entries = self.api.list_repo_tree(repo_id, recursive=True)
        return {
            e.path: (e.blob_id, e.lfs.sha256 if e.lfs else None) for e in entries if isinstance(e, RepoFile)
        }

    def push(self, upload: Upload, private: bool, force: bool, say=print) -> str:
        """Create the repository if need be, refuse to overwrite others' bytes, commit; the commit URL."""
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        try:
            url = self.api.create_repo(upload.repo_id, private=private, exist_ok=True)
            say(f"repository {url}")
            tree = self.tree(upload.repo_id)
            clash = conflicts(upload, tree)
            if README in tree and not self.readme_is_ours(upload.repo_id):
                clash.append(README)
            if clash and not force:
                raise HubError(
                    f"{upload.repo_id} already holds {', '.join(sorted(clash))} with other content: pass "
                    "--force to replace them (the Hub keeps the old versions in its history), or push to "
                    "another --repo; files this push does not name are never touched"
                )
            ops = [CommitOperationAdd(path, str(local)) for path, local in sorted(upload.files.items())]
            ops.append(CommitOperationAdd(README, upload.readme))
            kept = sorted(set(tree) - {op.path_in_repo for op in ops})
            if kept:
                say(f"left as they are: {', '.join(kept)}")
            info = self.api.create_commit(
                upload.repo_id, ops, commit_message="Upload a story-assistant run (story-pipeline hub push)"
            )
        except HubError:
            raise
        except HfHubHTTPError as e:
            raise self._refused(e, f"check that the token may write to {upload.repo_id.split('/')[0]}") from e
        except ValueError as e:  # the Hub's metadata check of README.md
            raise HubError(f"the Hub refused the model card: {e}") from e
        except RuntimeError as e:  # an LFS upload failed: the commit was never sent
            cause = e.__cause__ or e
            raise HubError(
                f"{e} ({_first_line(cause)}): nothing was committed, the repository is as it was; run "
                "the same command again to go on (files the Hub already received are not sent twice)"
            ) from e
        except OSError as e:  # the Hub unreachable (requests / httpx connection errors are OSErrors)
            raise HubError(f"cannot reach the Hub at {self.api.endpoint}: {_first_line(e)}") from e
        return str(info.commit_url)

    def _refused(self, e, fix: str) -> HubError:
        status = e.response.status_code if e.response is not None else None
        server = getattr(e, "server_message", None) or _first_line(e)
        if status == 401:
            return HubError(
                f"the Hub refused the token ({server}): {fix}, then `hf auth login`, set HF_TOKEN or "
                "pass --token"
            )
        if status == 403:
            return HubError(f"the Hub refused the write ({server}): {fix}")
        return HubError(f"the Hub answered {status}: {server}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
