"""Merge a PEFT adapter into its base and write a Hugging Face folder or a full GGUF (`export-merged`).

The merge is PEFT's own `merge_and_unload`, so everything a GGUF adapter cannot carry (DoRA, trained
biases, modules_to_save) is merged the way training meant it. The safetensors folder is what
`ollama create --quantize q4_K_M` takes from FROM; the GGUF goes through the same writer as
`export-base`, then optionally through llama.cpp's quantizer: the published story models' path
(adapter merged into the F16 base, then quantized to 4 bits).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from contract import chat_template
from pipeline.export.arch import load_base
from pipeline.export.gguf_adapter import check_against_base
from pipeline.export.gguf_model import quantize, write_model
from pipeline.export.gguf_write import WriteReport
from pipeline.export.peft_adapter import load_adapter
from pipeline.export.safetensors_io import TensorSet
from plumbing.atomic import OutputExistsError, exists_message

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class StateDictSource:
    """A TensorSource over an in-memory PyTorch model: tensors become float32 numpy one at a time."""

    def __init__(self, model):
        self.state = model.state_dict()

    def names(self) -> list[str]:
        from pipeline.export.safetensors_io import natural_key

        return sorted(self.state, key=natural_key)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.state[name].shape)

    def read(self, name: str) -> np.ndarray:
        return self.state[name].detach().float().cpu().numpy()


def merged_model(adapter_dir: Path, base_dir: Path):
    """The base with the adapter merged in by PEFT, in the base's own dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    with torch.no_grad():
        return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside path, moved onto it only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(exists_message(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_model_files(base_dir: Path, out_dir: Path) -> None:
    """Config, generation config, tokenizer and chat template: every file but the weights."""
    for f in base_dir.iterdir():
        if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES) and not f.name.endswith(".index.json"):
            shutil.copy2(f, out_dir / f.name)


def set_chat_template(folder: Path, template: str | None) -> None:
    """Make the folder's tokenizer carry this chat template (the adapter's: the one it was trained
    with) in tokenizer_config.json's `chat_template`, and nowhere else: Ollama's converter reads it only
    there (convert/tokenizer.go, v0.33.0-rc2), so `ollama create` from this folder keeps it, and
    transformers reads it there too once no chat_template.jinja (which it would prefer) is left."""
    if template is None:
        return
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_merged(
    adapter_dir: str | Path | None,
    base_dir: str | Path,
    out: str | Path,
    fmt: str = "gguf",
    outtype: str = "f16",
    quant: str | None = None,
    overwrite: bool = False,
    on_tensor: Callable[[str], None] | None = None,
) -> WriteReport:
    """Merge (or, without an adapter, just convert the base) and write `out`."""
    base_dir, out = Path(base_dir), Path(out)
    base = load_base(base_dir)
    if not overwrite and out.exists():
        raise OutputExistsError(exists_message(out))
    adapter_template = None
    if adapter_dir is not None:
        check_against_base(load_adapter(adapter_dir, strict=False), base)
        adapter_template = chat_template.folder_chat_template(Path(adapter_dir))[0]
    t0 = time.perf_counter()
    if fmt == "safetensors":
        if quant:
            raise ValueError(
                "--quantize applies to --format gguf; for safetensors let `ollama create --quantize` do it"
            )
        if adapter_dir is None:
            raise ValueError(
                "export-merged --format safetensors needs an adapter (the base folder is already one)"
            )
        with atomic_dir(out, overwrite) as tmp:
            merged_model(Path(adapter_dir), base_dir).save_pretrained(tmp, safe_serialization=True)
            copy_model_files(base_dir, tmp)
            # the base's own template too, when the adapter carries none: moved where Ollama reads it
            set_chat_template(tmp, adapter_template or chat_template.folder_chat_template(base_dir)[0])
        written = TensorSet(out)  # the tensors as written, counted from the files' headers
        names = written.names()
        types = Counter(written.dtype(n) for n in names)
        size = sum(f.stat().st_size for f in out.iterdir())
        return WriteReport(out, len(names), size, time.perf_counter() - t0, types=dict(types))
    if fmt != "gguf":
        raise ValueError(f"unknown format {fmt!r}: use safetensors or gguf")
    source = (
        StateDictSource(merged_model(Path(adapter_dir), base_dir)) if adapter_dir else TensorSet(base_dir)
    )
    writer_template, note = writer_chat_template(Path(adapter_dir) if adapter_dir else None, base_dir)
    if not quant:
        report = write_model(base, source, base_dir, out, outtype, overwrite, on_tensor, writer_template)
        report.notes.append(note)
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        f16 = Path(tmp) / "unquantized.gguf"  # llama.cpp quantizes from a file, like llama-quantize
        report = write_model(base, source, base_dir, f16, outtype, True, on_tensor, writer_template)
        q = quantize(f16, out, quant, overwrite)
    q.notes, q.seconds = [*report.notes, note], time.perf_counter() - t0
    return q


def writer_chat_template(adapter_dir: Path | None, base_dir: Path) -> tuple[str | None, str]:
    """The GGUF's tokenizer.chat_template: the writer prompt in the chat template training used, and a note.

    Ollama renders the GGUF's chat template instead of a Modelfile TEMPLATE when it finds it more
    capable, and with no TEMPLATE at all; either way this one gives the model the training bytes (its
    date and thinking switch pinned, `ChatTemplate.pinned_jinja`). The template is the one the adapter
    was trained with, else the base's. A base whose template cannot be served keeps its own.
    """
    from contract import go_chat

    trained = chat_template.of_folder(adapter_dir) if adapter_dir else None
    trained = trained or chat_template.of_folder(base_dir)
    if trained is None:
        return None, "tokenizer.chat_template: none (the tokenizer has no chat template)"
    try:
        go_chat.check(trained)
    except chat_template.UnknownFamilyError as e:
        return None, f"tokenizer.chat_template: the base's own ({e})"
    return trained.pinned_jinja(writer=True), (
        f"tokenizer.chat_template: the writer prompt in the {trained.family} chat template, as trained"
        f" on {trained.date}"
    )
