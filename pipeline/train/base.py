"""The base model: the hardware it trains on, its tokenizer and chat format, and loading it (4-bit or not).

The chat template is the contract between training and serving: the base's own (or `--chat-template`,
which replaces it), pinned (date, thinking switch) and checked to be servable byte for byte
(`contract.chat_template`, `contract.go_chat`) before any work, then saved with the adapter so export,
Modelfile and the bot render the same bytes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from contract import chat_template, go_chat
from contract.chat_template import ChatTemplate
from pipeline.train.options import ATTENTION_MODULES, TrainError, TrainOptions, local_rank


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
    return Hardware("cpu", "CPU", cpu_has_bf16())


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512_BF16 or AMX on x86, BF16 on Arm), where bf16 mixed
    precision trained SmolLM2's LoRA 1.34 times faster than fp32 (benchmarks/bench_train.py); elsewhere
    it is emulated and slower."""
    import torch

    caps = torch.cpu.get_capabilities()
    return any(caps.get(name) for name in ("avx512_bf16", "amx_bf16", "sve_bf16", "bf16"))


def score_labelled_positions_only() -> bool:
    """Make TRL's fused LM head score only the labelled positions on a CPU, as it does on CUDA and XPU.

    TRL 1.16 scores every position on other devices, so that compiled ones (XLA, Neuron) keep one tile
    shape per batch; a CPU runs eagerly and only pays for the prompt and padding positions it then throws
    away. SmolLM2-135M, 6 SFT steps of 4 × 384 tokens in bf16 on 2 cores (2026-12-07): 1.38 times faster,
    13% less peak memory, the same losses. False, and nothing changed, where TRL has no such switch."""
    from trl.trainer import utils

    use_triton = getattr(utils, "_use_triton", None)  # private, so looked up, not assumed
    if use_triton is None:
        return False
    if getattr(use_triton, "labelled_only_on_cpu", False):
        return True

    def compact(device) -> bool:
        return device.type == "cpu" or use_triton(device)

    compact.labelled_only_on_cpu = True  # type: ignore[attr-defined]
    utils._use_triton = compact
    return True


def choose_precision(requested: str, hw: Hardware) -> str:
    """bf16 mixed precision where the GPU has it, fp16 on older GPUs, fp32 on the CPU. On a CPU bf16 is
    asked for, never picked: fp32 keeps CPU runs (the tests, small jobs) alike from one CPU to the next."""
    if requested == "auto":
        if hw.device == "cuda":
            return "bf16" if hw.bf16 else "fp16"
        return "fp32"
    if requested == "bf16" and hw.device == "cuda" and not hw.bf16:
        raise TrainError(
            f"{hw.name} has no bf16 support: use --precision fp16 (or auto, which picks it), or a newer GPU"
        )
    if requested == "bf16" and hw.device == "cpu" and not hw.bf16:
        raise TrainError(
            "this CPU has no native bf16 (AVX512_BF16, AMX or Arm BF16), so bf16 would be emulated and "
            "slower than fp32: use --precision fp32 (or auto)"
        )
    if requested == "fp16" and hw.device != "cuda":
        raise TrainError(f"fp16 mixed precision needs a CUDA GPU; on {hw.name} use --precision fp32 or auto")
    return requested


def check_qlora(device: str) -> None:
    """Refuse QLoRA early, by name, where bitsandbytes cannot train 4-bit layers on this device.

    The probe does what training does, on one small layer: a frozen 4-bit NF4 linear layer with a bias
    (Qwen2's q/k/v have one) under a trainable LoRA pair, a training step with inputs that require grad
    (as gradient checkpointing makes them), an evaluation, then a second training step. Some bitsandbytes
    releases pass the first step and fail after the evaluation (0.49+ on CPUs with AVX512-BF16 repack the
    weights for inference, and the repacked path breaks autograd), so one forward pass proves nothing.
    """
    hint = "train plain LoRA with --no-qlora instead"
    try:
        import torch
        from bitsandbytes import nn as bnb_nn
    except Exception as e:  # ImportError, or a build that fails to load its native library
        raise TrainError(
            f"QLoRA needs bitsandbytes, which cannot load here ({e}): pip install bitsandbytes, or {hint}"
        ) from e
    try:
        with warnings.catch_warnings():  # bitsandbytes' deprecation chatter is not the user's business
            warnings.simplefilter("ignore")
            _probe_4bit_training(torch, bnb_nn, device)
    except Exception as e:
        raise TrainError(
            f"bitsandbytes {_bnb_version()} cannot train 4-bit NF4 layers on {device} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}): {hint}, or install the "
            "bitsandbytes release of the lock (make install)"
        ) from e


def _bnb_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitsandbytes")
    except PackageNotFoundError:
        return "(unknown version)"


def _probe_4bit_training(torch, bnb_nn, device: str) -> None:
    generator = torch.Generator().manual_seed(0)
    full = torch.nn.Linear(64, 64, bias=True)
    layer = bnb_nn.Linear4bit(64, 64, bias=True, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict(full.state_dict())
    layer = layer.to(device)  # quantizes on the way to the device
    layer.requires_grad_(False)
    lora_a = torch.nn.Linear(64, 8, bias=False).to(device)
    lora_b = torch.nn.Linear(8, 64, bias=False).to(device)
    torch.nn.init.zeros_(lora_b.weight)  # as LoRA starts: the pair adds nothing until trained
    x = torch.randn(4, 64, generator=generator).to(device)

    def step() -> torch.Tensor:
        inputs = x.clone().requires_grad_(True)
        out = layer(inputs) + lora_b(lora_a(inputs))
        out.float().pow(2).mean().backward()
        return out.detach()

    first = step()
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    second = step()
    expected = full.to(device)(x).detach()
    for out in (first, second):
        if not torch.isfinite(out).all() or (out.float() - expected.float()).abs().mean() > 0.2:
            raise ValueError("the 4-bit layer gives wrong numbers")
    grad = lora_b.weight.grad
    if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
        raise ValueError("no gradient reaches the LoRA weights through the 4-bit layer")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_source(source: str | Path, flag: str = "--base") -> None:
    """A model given as a path must be a folder that exists; only what looks like a hub id goes to the
    Hub (whose own answer to a missing folder is a puzzle about repo-id characters)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise TrainError(f"{flag} {source} is a file: give the model's folder (with config.json)")
    if not _HUB_ID.fullmatch(str(source)) or str(source).startswith((".", "~")):
        raise TrainError(
            f"{flag} {source} does not exist: give a local model folder (e.g. from `story-pipeline models "
            "tiny`) or a Hugging Face hub id like Qwen/Qwen2.5-7B-Instruct"
        )


def load_tokenizer(
    source: str | Path,
    chat_template_path: Path | None = None,
    local_files_only: bool = False,
    target: str = ChatTemplate.target,
) -> tuple[object, ChatTemplate]:
    """(tokenizer, trained chat template) of a base model or adapter folder, the template checked and
    pinned: the tokenizer then renders (for TRL too) exactly what training tokenises and serving sends.
    The training target rides in the template's record wherever it goes (adapter, GGUF, Modelfile, bot)."""
    from transformers import AutoTokenizer

    check_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {source}: {e}") from e
    if chat_template_path is not None:
        try:
            given = chat_template.from_path(
                chat_template_path, tokenizer.bos_token or "", tokenizer.eos_token or ""
            )
        except ValueError as e:
            raise TrainError(f"--chat-template {e}") from e
        tokenizer.chat_template = given.source
    trained = chat_template.of_tokenizer(tokenizer)
    if trained is None:
        raise TrainError(
            f"{source} has no chat template: pass --chat-template (a Hugging Face folder, its "
            "tokenizer_config.json or a .jinja file) to train with one; the adapter keeps it"
        )
    try:
        go_chat.check(trained)
    except chat_template.UnknownFamilyError as e:
        raise TrainError(
            f"{source}: {e}, so no Modelfile could serve the model the bytes it is trained on: train with "
            "a chat template that renders a plain system/user/assistant conversation (--chat-template)"
        ) from e
    vocab = tokenizer.get_vocab()
    missing = [t for t in (*trained.stops, trained.bos_token) if t and t not in vocab]
    if missing:
        raise TrainError(
            f"the tokenizer of {source} has no {', '.join(missing)} token, which its chat template writes: "
            "give the chat template this tokenizer was made for (--chat-template)"
        )
    trained = replace(trained, target=target)
    tokenizer.chat_template = trained.pinned_jinja()
    return tokenizer, trained


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
        raise TrainError(f"cannot load the base model {opts.base}: {e}") from e
    if "lm_head" in opts.target_modules and model.config.get_text_config().tie_word_embeddings:
        raise TrainError(
            "lm_head shares its weights with the embeddings in this model: a LoRA on it cannot be exported "
            "to GGUF; drop lm_head from --target-modules"
        )
    return model


def check_target_modules(opts: TrainOptions) -> tuple[str, ...]:
    """The --target-modules to train, checked against the base's linear layers before anything loads
    (read from the config, on the meta device, without the weights): names it lacks are refused, and the
    default attention projections become the fused `qkv_proj` where the base has that (Phi-3)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if opts.target_modules == ("all-linear",):
        return opts.target_modules
    try:
        config = AutoConfig.from_pretrained(opts.base)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read the config of the base model {opts.base}: {e}") from e
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if opts.target_modules == ATTENTION_MODULES and "q_proj" not in linear and "qkv_proj" in linear:
        return ("qkv_proj", "o_proj")
    unknown = [t for t in opts.target_modules if t not in linear]
    if unknown:
        raise TrainError(
            f"--target-modules {','.join(unknown)}: {opts.base} has no such linear layer; its layers are "
            f"{','.join(sorted(linear))} (or give all-linear)"
        )
    return opts.target_modules


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
