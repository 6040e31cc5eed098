"""What a FROM or ADAPTER points at: a GGUF file's architecture and type, or a known library model's."""

from __future__ import annotations

import json
from pathlib import Path

from contract import chat_formats

# Hugging Face model_type -> GGUF general.architecture for the families we export.
HF_TO_GGUF_ARCH = {
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "llama": "llama",
    "mistral": "llama",
    "phi3": "phi3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
}
# Our chat formats -> the GGUF architecture of the models that use them.
FORMAT_ARCH = {"qwen2.5": "qwen2", "qwen2": "qwen2", "llama3": "llama"}


class NotAnAdapterError(ValueError):
    pass


def gguf_fields(path: Path) -> dict[str, object]:
    """The key/value metadata of a GGUF file (strings and numbers), without loading tensors."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors on foreign or truncated files
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e
    out: dict[str, object] = {}
    for key, f in reader.fields.items():
        try:
            out[key] = f.contents()
        except Exception:  # arrays of odd types: not needed here
            continue
    return out


def architecture_of(path: Path) -> str | None:
    """The GGUF architecture of a local model file or Hugging Face folder, if it can be read."""
    if path.is_dir():
        config = path / "config.json"
        if config.exists():
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
            return HF_TO_GGUF_ARCH.get(model_type, model_type or None)
        return None
    try:
        return str(gguf_fields(path).get("general.architecture") or "") or None
    except ValueError:
        return None


def architecture_of_name(model: str) -> str | None:
    """The architecture of an Ollama library model we know by name, else None."""
    try:
        return FORMAT_ARCH.get(chat_formats.for_ollama_name(model).name)
    except chat_formats.UnknownFormatError:
        return None


def adapter_architecture(path: Path) -> str | None:
    """Check that path is a GGUF LoRA adapter and return its architecture."""
    if path.is_dir():
        raise NotAnAdapterError(
            "is a folder, not a GGUF adapter: convert the PEFT adapter with `story-pipeline export-gguf`"
        )
    try:
        fields = gguf_fields(path)
    except ValueError as e:
        raise NotAnAdapterError(f"{e}: convert the PEFT adapter with `story-pipeline export-gguf`") from None
    if fields.get("general.type") != "adapter":
        raise NotAnAdapterError(
            f"general.type is {fields.get('general.type')!r}, not 'adapter': Ollama would store it as a "
            "second model, not apply it; export the adapter with `story-pipeline export-gguf`"
        )
    if fields.get("adapter.type") != "lora":
        raise NotAnAdapterError(f"adapter.type is {fields.get('adapter.type')!r}; only 'lora' is supported")
    return str(fields.get("general.architecture") or "") or None


def local_chat_template(path: Path) -> tuple[str | None, str]:
    """(chat template, bos token) of a Hugging Face folder or a GGUF file."""
    if path.is_dir():
        return chat_formats.folder_chat_template(path)
    fields = gguf_fields(path)
    tokens, bos_id = fields.get("tokenizer.ggml.tokens"), fields.get("tokenizer.ggml.bos_token_id")
    has_bos = isinstance(tokens, list) and isinstance(bos_id, int) and 0 <= bos_id < len(tokens)
    return fields.get("tokenizer.chat_template"), str(tokens[bos_id]) if has_bos else ""  # type: ignore[return-value,index]
