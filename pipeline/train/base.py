"""The base model: the hardware it trains on, its tokenizer and chat format, and loading it (4-bit or not).

The chat format is the contract between training and serving: the base's own chat template must be one
of ours (`pipeline.chat_formats`), or `--chat-format` must name the one to train with, which then replaces
the tokenizer's template and is saved with the adapter so export and Modelfile use the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import chat_formats
from pipeline.train.options import TrainError, TrainOptions, local_rank


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda", "mps" or "cpu"
    name: str
    bf16: bool


def detect_hardware() -> Hardware:
    import torch

    if torch.cuda.is_available():
        return Hardware(
            "cuda",
            torch.cuda.get_device_name(local_rank()),
            torch.cuda.is_bf16_supported(including_emulation=False),
        )
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", "Apple GPU", False)
    return Hardware("cpu", "CPU", False)


def choose_precision(requested: str, hw: Hardware) -> str:
    """bf16 mixed precision where the GPU has it, fp16 on older GPUs, fp32 on the CPU."""
    if requested == "auto":
        if hw.device == "cuda":
            return "bf16" if hw.bf16 else "fp16"
        return "fp32"
    if requested == "bf16" and hw.device == "cuda" and not hw.bf16:
        raise TrainError(
            f"{hw.name} has no bf16 support: use --precision fp16 (or auto, which picks it), or a newer GPU"
        )
    if requested == "fp16" and hw.device != "cuda":
        raise TrainError(f"fp16 mixed precision needs a CUDA GPU; on {hw.name} use --precision fp32 or auto")
    return requested


def check_qlora(device: str) -> None:
    """Refuse QLoRA early, by name, where bitsandbytes cannot quantize to 4 bits."""
    hint = "train plain LoRA with --no-qlora instead"
    try:
        import torch
        from bitsandbytes import functional as bnbf
    except Exception as e:  # ImportError, or a build that fails to load its native library
        raise TrainError(
            f"QLoRA needs bitsandbytes, which cannot load here ({e}): pip install bitsandbytes, or {hint}"
        ) from None
    try:  # a real round trip on the device: the only reliable test of a build's backends
        probe = torch.linspace(-1, 1, 128, device=device)
        packed, state = bnbf.quantize_4bit(probe, quant_type="nf4")
        back = bnbf.dequantize_4bit(packed, state).float().cpu()
        if not torch.allclose(back, probe.cpu(), atol=0.2):
            raise ValueError("the 4-bit round trip gives wrong numbers")
    except Exception as e:
        raise TrainError(
            f"bitsandbytes cannot run 4-bit NF4 on {device} ({type(e).__name__}: {e}): {hint}"
        ) from None


def _format_tokens_present(tokenizer, fmt: chat_formats.ChatFormat) -> list[str]:
    vocab = tokenizer.get_vocab()
    return [t for t in (*fmt.stop, fmt.bos) if t and t not in vocab]


def load_tokenizer(source: str | Path, chat_format: str | None):
    """(tokenizer, chat format) of a base model or adapter folder, with the format checked or set."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {source}: {e}") from None
    own = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    detected, refusal = None, None
    if own:
        try:
            detected = chat_formats.detect_from_jinja(
                own, tokenizer.bos_token or "", tokenizer.eos_token or ""
            )
        except chat_formats.UnknownFormatError as e:
            refusal = str(e)
    if chat_format:
        try:
            fmt = chat_formats.get(chat_format)
        except chat_formats.UnknownFormatError as e:
            raise TrainError(str(e)) from None
        missing = _format_tokens_present(tokenizer, fmt)
        if missing:
            raise TrainError(
                f"the tokenizer of {source} has no {', '.join(missing)} token: chat format {fmt.name} cannot "
                f"be used with it; choose a format whose special tokens it has ({chat_formats.supported()})"
            )
        tokenizer.chat_template = fmt.jinja
        return tokenizer, fmt
    if detected:
        return tokenizer, detected
    if own is None:
        raise TrainError(
            f"{source} has no chat template: pass --chat-format NAME ({chat_formats.supported()}) to train "
            "with one; the adapter keeps it, and the Modelfile must then use the same format"
        )
    raise TrainError(
        f"{source}: {refusal}, so a Modelfile could not serve the model the bytes it was trained on: pass "
        "--chat-format NAME to train with one of them instead (it replaces the tokenizer's template)"
    )


def load_model(opts: TrainOptions, precision: str, hw: Hardware):
    """The base causal LM, 4-bit NF4 under QLoRA, on this process's device."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs: dict = {"dtype": dtype}
    if opts.qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        # Each process holds its own whole copy on its own GPU (data parallel).
        kwargs["device_map"] = {"": local_rank() if hw.device == "cuda" else hw.device}
    try:
        model = AutoModelForCausalLM.from_pretrained(opts.base, **kwargs)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the base model {opts.base}: {e}") from None
    if "lm_head" in opts.target_modules and model.config.get_text_config().tie_word_embeddings:
        raise TrainError(
            "lm_head shares its weights with the embeddings in this model: a LoRA on it cannot be exported "
            "to GGUF; drop lm_head from --target-modules"
        )
    return model


def lora_config(opts: TrainOptions):
    from peft import LoraConfig

    targets = opts.target_modules
    return LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,
        lora_dropout=opts.dropout,
        # "all-linear" is PEFT's own shorthand; anything else is a list of module names.
        target_modules="all-linear" if targets == ("all-linear",) else list(targets),
        bias="none",  # llama.cpp's adapter format carries no bias tensors
        task_type="CAUSAL_LM",
    )


def with_new_adapter(model, opts: TrainOptions):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(opts))


def with_adapter(model, adapter: Path):
    """The base with an earlier (SFT) adapter loaded, trainable, as the starting point."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise TrainError(
            f"{adapter} is not a PEFT adapter folder (no adapter_config.json): give an SFT output"
        )
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def tokenizer_source(opts: TrainOptions) -> str | Path:
    """Continue with the adapter's own tokenizer (and chat template) when it has one."""
    if opts.adapter and (Path(opts.adapter) / "tokenizer_config.json").is_file():
        return opts.adapter
    return opts.base
