"""`hub push` with the official huggingface_hub client against the stand-in Hub (tests/fakes/hub.py): one
commit or none, a resumed upload, a refused token, and a repository whose other files stay."""

import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from pipeline.hub import card, upload
from pipeline.hub.upload import HubError, Publisher

BASE = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def _plan(run_dir, repo="you/r1-writer", **kw):
    out = run_dir.parent
    inputs = card.CardInputs(repo, base_model=BASE, writing_prompts="euclaise/writingprompts", **kw)
    ggufs = [out / "r1-writer.gguf", out / "r1-writer-Q4_K_M.gguf"]
    return upload.prepare(run_dir, inputs, ggufs, out / "Writer.Modelfile")


def test_push_creates_the_repository_in_one_commit(fake_hub, run_dir):
    url = Publisher("hf_writer", fake_hub.url).push(
        _plan(run_dir), private=True, force=False, say=lambda s: None
    )

    repo = fake_hub.repos["you/r1-writer"]
    assert repo.private and url.endswith(f"/you/r1-writer/commit/{repo.sha}")
    assert repo.commits == ["Upload a story-assistant run (story-pipeline hub push)"]
    out = run_dir.parent
    assert repo.files["adapter_model.safetensors"] == (run_dir / "adapter_model.safetensors").read_bytes()
    assert repo.files["r1-writer-Q4_K_M.gguf"] == (out / "r1-writer-Q4_K_M.gguf").read_bytes()
    assert repo.files["Modelfile"] == (out / "Writer.Modelfile").read_bytes()
    assert {"adapter_config.json", "tokenizer.json", "training.json", "log.jsonl", "r1-writer.gguf"} <= set(
        repo.files
    )
    assert not any(p.startswith("checkpoints") for p in repo.files)
    assert repo.lfs == {"adapter_model.safetensors", "r1-writer.gguf", "r1-writer-Q4_K_M.gguf"}
    data = ModelCard(repo.files["README.md"].decode()).data
    assert data.base_model == BASE and data.library_name == "peft"
    assert "ollama run hf.co/you/r1-writer  # r1-writer-Q4_K_M.gguf" in repo.files["README.md"].decode()


def test_an_upload_failing_midway_commits_nothing_and_the_rerun_resumes(fake_hub, run_dir):
    fake_hub.fail_uploads = [2]  # the second large file's PUT is refused
    hub = Publisher("hf_writer", fake_hub.url)
    with pytest.raises(
        HubError,
        match=r"Error while uploading .*403 Forbidden.*nothing was committed.*run the same command again",
    ):
        hub.push(_plan(run_dir), private=False, force=False, say=lambda s: None)
    repo = fake_hub.repos["you/r1-writer"]
    assert repo.files == {} and repo.commits == []  # created, empty: nothing half-published
    stored, puts = len(fake_hub.lfs_store), fake_hub.puts
    assert stored == puts - 1 >= 1  # the client's threads: one failed, the others went

    hub.push(_plan(run_dir), private=False, force=False, say=lambda s: None)
    assert fake_hub.puts - puts == 3 - stored  # only what the Hub lacked was sent again
    assert len(fake_hub.lfs_store) == 3 and len(repo.commits) == 1 and "README.md" in repo.files


def test_a_refused_token(fake_hub, run_dir):
    with pytest.raises(
        HubError, match=r"refused the token \(Invalid user token.*settings/tokens.*hf auth login"
    ):
        Publisher("hf_wrong", fake_hub.url).whoami()
    fake_hub.tokens["hf_reader"] = fake_hub.tokens["hf_writer"].__class__("you", write=False)
    with pytest.raises(HubError, match=r"refused the write .*rights.*namespace \"you\".*may write to you"):
        Publisher("hf_reader", fake_hub.url).push(
            _plan(run_dir), private=False, force=False, say=lambda s: None
        )
    assert fake_hub.repos == {}


def test_a_namespace_not_yours(fake_hub, run_dir):
    hub = Publisher("hf_writer", fake_hub.url)
    with pytest.raises(HubError, match="refused the write.*may write to someone"):
        hub.push(_plan(run_dir, repo="someone/r1-writer"), private=False, force=False, say=lambda s: None)
    hub.push(
        _plan(run_dir, repo="team/r1-writer"), private=False, force=False, say=lambda s: None
    )  # an org of yours
    assert "README.md" in fake_hub.repos["team/r1-writer"].files


def test_an_existing_repository_keeps_its_other_files(fake_hub, run_dir):
    mine = {"notes.md": b"my notes", "old/model.gguf": b"GGUF old", "README.md": b"# my own card\n"}
    fake_hub.add_repo("you/r1-writer", mine)
    hub = Publisher("hf_writer", fake_hub.url)
    said = []
    with pytest.raises(HubError, match="already holds README.md with other content: pass --force") as refused:
        hub.push(_plan(run_dir), private=False, force=False, say=said.append)
    assert str(refused.value).endswith("files this push does not name are never touched")
    assert fake_hub.repos["you/r1-writer"].files == mine

    hub.push(_plan(run_dir), private=False, force=True, say=said.append)
    files = fake_hub.repos["you/r1-writer"].files
    assert files["notes.md"] == b"my notes" and files["old/model.gguf"] == b"GGUF old"  # nothing deleted
    assert card.MARKER in files["README.md"].decode()
    assert "left as they are: notes.md, old/model.gguf" in said

    # Our own card, and the same files: pushed again without --force, nothing new sent
    puts = fake_hub.puts
    hub.push(_plan(run_dir), private=False, force=False, say=said.append)
    assert fake_hub.puts == puts and files["notes.md"] == b"my notes"


def test_a_different_file_of_the_same_name_is_not_replaced_silently(fake_hub, run_dir):
    fake_hub.add_repo("you/r1-writer", {"tokenizer.json": b'{"theirs": 1}'})
    with pytest.raises(HubError, match="already holds tokenizer.json with other content"):
        Publisher("hf_writer", fake_hub.url).push(
            _plan(run_dir), private=False, force=False, say=lambda s: None
        )


def test_not_a_gguf(run_dir, tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(HubError, match="not a readable GGUF file"):
        upload.prepare(run_dir, card.CardInputs("you/x", base_model=BASE), [bad], None)


def test_cli_hub_push(fake_hub, run_dir, tmp_path):
    out = run_dir.parent
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "hf_writer"}
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "hub",
        "push",
        str(run_dir),
        "--repo",
        "you/r1-writer",
        "--gguf",
        str(out / "r1-writer.gguf"),
        "--modelfile",
        str(out / "Writer.Modelfile"),
        "--endpoint",
        fake_hub.url,
        "--book",
        "Alice",
        "--teacher",
        "deepseek-r1:14b",
    ]
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "pass --base-model" in r.stderr and fake_hub.requests == []
    r = subprocess.run([*args, "--base-model", BASE], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert (
        "signed in to" in r.stderr and "as you" in r.stderr and "pushed 8 files to you/r1-writer" in r.stderr
    )
    assert "*Alice*" in fake_hub.repos["you/r1-writer"].files["README.md"].decode()
    r = subprocess.run(
        [*args, "--base-model", BASE], capture_output=True, text=True, env={**env, "HF_TOKEN": "hf_wrong"}
    )
    assert r.returncode == 2 and "refused the token" in r.stderr


def test_a_quantized_gguf_carries_its_measured_distance_into_the_repository(run_dir):
    """verify-quant's sidecar beside a quantized GGUF goes with it, and the card shows its figures; a
    sidecar that describes an older version of the file stays home."""
    from pipeline.export import distance
    from pipeline.export.quants import QUANT_TYPES

    model = run_dir.parent / "r1-writer-Q4_K_M.gguf"
    d = distance.Distance(
        rows=8, tokens=400, mean_kl=0.0123, max_kl=0.4, top1=0.91, ppl_f16=9.5, ppl_quant=9.8
    )
    m = distance.Measurement(
        quant=model.name,
        reference="r1-writer-f16.gguf",
        lora=None,
        judged_as="q4_k_m",
        distance=d,
        tolerance=QUANT_TYPES["q4_k_m"].tolerance,
        sha256={"quant": distance.sha256(model)},
    )
    distance.write_sidecar(model, m)
    plan = _plan(run_dir)
    assert plan.files["r1-writer-Q4_K_M.gguf.distance.json"] == distance.sidecar_path(model)
    readme = plan.readme.decode()
    assert "## Quantization" in readme
    assert (
        "| `r1-writer-Q4_K_M.gguf` | - | q4_k_m | 0.0123 | 91.0% | 9.500 -> 9.800 | within the q4_k_m"
        in readme
    )
    model.write_bytes(model.read_bytes() + b"\0")  # re-exported after it was measured
    plan = _plan(run_dir)
    assert (
        "r1-writer-Q4_K_M.gguf.distance.json" not in plan.files
        and "## Quantization" not in plan.readme.decode()
    )
