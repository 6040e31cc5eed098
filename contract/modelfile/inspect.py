"""What a FROM or ADAPTER points at: a GGUF file's architecture and type, or a known library model's."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from contract import chat_template

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
# Ollama library models (the name before ':') -> their GGUF architecture, for the ADAPTER check. DeepSeek-R1's
# distills are Qwen2 but for the 8b and 70b tags (Llama); the tag decides there.
LIBRARY_ARCH = {
    "qwen2": "qwen2",
    "qwen2.5": "qwen2",
    "molbal/cra-v1-7b": "qwen2",
    "molbal/cra-v1-32b": "qwen2",
    "qwen3": "qwen3",
    "qwq": "qwen2",
    "deepseek-r1": "qwen2",
    "llama3": "llama",
    "llama3.1": "llama",
    "llama3.2": "llama",
    "llama3.3": "llama",
    "mistral": "llama",
    "mistral-nemo": "llama",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "phi3": "phi3",
    "phi3.5": "phi3",
    "smollm2": "llama",
}
_LLAMA_TAGS = {"deepseek-r1": ("8b", "70b")}


class NotAnAdapterError(ValueError):
    pass


def gguf_fields(path: Path) -> dict[str, object]:
    """The key/value metadata of a GGUF file (strings and numbers), without loading tensors."""
    try:
        stat = path.stat()
    except OSError as e:
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e
    return dict(_gguf_fields(path.resolve(), stat.st_size, stat.st_mtime_ns))


# gguf's reader decodes every array element (a vocabulary of 49k tokens: seconds), and writing one Modelfile
# reads its FROM up to three times; a file changed since has another size or time, so another key.
@functools.lru_cache(maxsize=8)
def _gguf_fields(path: Path, size: int, mtime_ns: int) -> dict[str, object]:
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
    name, _, tag = model.lower().partition(":")
    name = name.removeprefix("registry.ollama.ai/").removeprefix("library/")
    if any(tag.startswith(t) for t in _LLAMA_TAGS.get(name, ())):
        return "llama"
    return LIBRARY_ARCH.get(name)


def adapter_architecture(path: Path) -> str | None:
    """Check that path is a GGUF LoRA adapter and return its architecture."""
    if path.is_dir():
        raise NotAnAdapterError(
            "is a folder, not a GGUF adapter: convert the PEFT adapter with `story-pipeline export-gguf`"
        )
    try:
        fields = gguf_fields(path)
    except ValueError as e:
        raise NotAnAdapterError(f"{e}: convert the PEFT adapter with `story-pipeline export-gguf`") from e
    if fields.get("general.type") != "adapter":
        raise NotAnAdapterError(
            f"general.type is {fields.get('general.type')!r}, not 'adapter': Ollama would store it as a "
            "second model, not apply it; export the adapter with `story-pipeline export-gguf`"
        )
    if fields.get("adapter.type") != "lora":
        raise NotAnAdapterError(f"adapter.type is {fields.get('adapter.type')!r}; only 'lora' is supported")
    return str(fields.get("general.architecture") or "") or None


def local_chat_template(path: Path) -> tuple[str | None, str, str]:
    """(chat template, bos token, eos token) of a Hugging Face folder or a GGUF file."""
    if path.is_dir():
        return chat_template.folder_chat_template(path)
    fields = gguf_fields(path)
    tokens = fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        i = fields.get(key)
        ok = isinstance(tokens, list) and isinstance(i, int) and 0 <= i < len(tokens)
        return str(tokens[i]) if ok else ""  # type: ignore[index]

    template = fields.get("tokenizer.chat_template")
    return (
        (template if isinstance(template, str) else None),
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
    )
