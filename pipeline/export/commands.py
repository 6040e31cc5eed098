"""`story-pipeline export-gguf`, `export-merged`, `export-base`, `verify-gguf` and `verify-quant`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pipeline.export.quants import QUANT_TYPES
from pipeline.flags import fail, force_option, output_option
from pipeline.ranges import ranged
from plumbing import atomic
from plumbing.extras import needs

console = Console(stderr=True, soft_wrap=True)
FEW_TOKENS = 500  # below this, one token moves top-1 agreement by 0.2% or more
_BAR = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


class OutType(StrEnum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    q8_0 = "q8_0"


# The choices come from the one declaration of the types (pipeline/export/quants.py).
Quant = StrEnum("Quant", {name: name for name in QUANT_TYPES})  # type: ignore[misc]


class Format(StrEnum):
    safetensors = "safetensors"
    gguf = "gguf"


Force = Annotated[bool, force_option("Replace OUT if it exists")]
Output = Annotated[Path, output_option("File (or folder) to write")]


def _errors():
    from pipeline.export.arch import BaseModelError
    from pipeline.export.gguf_vocab import TokenizerExportError
    from pipeline.export.peft_adapter import AdapterError
    from pipeline.export.safetensors_io import SafetensorsError
    from plumbing.atomic import OutputExistsError

    return (
        AdapterError,
        BaseModelError,
        SafetensorsError,
        TokenizerExportError,
        OutputExistsError,
        ValueError,
        RuntimeError,
        OSError,
    )


def check_output(output: Path, force: bool, folder: bool = False) -> None:
    """The output checked before the export reads anything; a refusal is exit 2 like other bad input."""
    try:
        atomic.check_output(output, force, folder)
    except atomic.OutputError as e:
        fail(str(e))


def _run(fn, *args, **kwargs):
    """Run an export with a tensor counter; bad input becomes one red line and exit code 2."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} tensors  {task.description}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)
        try:
            return fn(*args, **kwargs, on_tensor=lambda n: bar.update(task, advance=1, description=n))
        except _errors() as e:
            bar.stop()
            fail(str(e))


def _show(report) -> None:
    types = ", ".join(f"{k} {v}" for k, v in sorted(report.types.items()))
    console.print(
        f"wrote {escape(str(report.path))}: {report.tensors} tensors ({types}), "
        f"{report.bytes / 2**20:.1f} MiB in {report.seconds:.2f} s"
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def _verify(
    hf_dir: Path,
    model_gguf: Path,
    adapter_dir: Path | None = None,
    lora_gguf: Path | None = None,
    text: str | None = None,
    tolerance: float | None = None,
) -> None:
    from pipeline.export.verify import verify

    try:
        with console.status("comparing logits: llama.cpp vs transformers"):
            report = verify(hf_dir, model_gguf, adapter_dir, lora_gguf, text, tolerance)
    except _errors() as e:
        fail(str(e))
    for line in report.lines():
        console.print(escape(line))
    if not report.passed:
        raise typer.Exit(1)


def export_gguf(
    adapter: Annotated[Path, typer.Argument(help="PEFT adapter folder (adapter_config.json + safetensors)")],
    base: Annotated[Path, typer.Option(help="Base model's Hugging Face folder (config.json is enough)")],
    output: Output,
    outtype: Annotated[OutType, typer.Option(help="Type of the LoRA matrices")] = OutType.f32,
    force: Force = False,
    verify_on: Annotated[
        Path | None, typer.Option(help="Base GGUF (from export-base) to check the adapter on in llama.cpp")
    ] = None,
) -> None:
    """Convert a PEFT LoRA adapter to a GGUF adapter for llama.cpp and Ollama (ADAPTER in a Modelfile)."""
    from pipeline.export.gguf_adapter import export_adapter

    check_output(output, force)
    _show(_run(export_adapter, adapter, base, output, outtype.value, force))
    if verify_on:
        _verify(base, verify_on, adapter, output)


def export_merged(
    adapter: Annotated[Path, typer.Argument(help="PEFT adapter folder")],
    base: Annotated[Path, typer.Option(help="Base model's Hugging Face folder, with weights")],
    output: Output,
    fmt: Annotated[
        Format, typer.Option("--format", help="Hugging Face folder or one GGUF file")
    ] = Format.gguf,
    outtype: Annotated[OutType, typer.Option(help="GGUF weight type before --quantize")] = OutType.f16,
    quantize: Annotated[Quant | None, typer.Option(help="Quantize the GGUF with llama.cpp")] = None,
    force: Force = False,
    verify: Annotated[
        bool, typer.Option(help="Compare the GGUF's logits with the merged PyTorch model")
    ] = False,
) -> None:
    """Merge the adapter into the base: a safetensors folder for `ollama create --quantize`, or a GGUF."""
    from pipeline.export import merged

    q = quantize.value if quantize else None
    check_output(output, force, folder=fmt is Format.safetensors)
    _show(_run(merged.export_merged, adapter, base, output, fmt.value, outtype.value, q, force))
    if verify:
        if fmt is not Format.gguf:
            console.print("[yellow]--verify checks GGUF files; skipped for a safetensors folder[/yellow]")
        else:
            _verify(base, output, adapter)


def export_base(
    base: Annotated[Path, typer.Argument(help="Hugging Face model folder")],
    output: Output,
    outtype: Annotated[OutType, typer.Option(help="GGUF weight type")] = OutType.f16,
    quantize: Annotated[Quant | None, typer.Option(help="Quantize the GGUF with llama.cpp")] = None,
    force: Force = False,
    verify: Annotated[bool, typer.Option(help="Compare the GGUF's logits with transformers")] = False,
) -> None:
    """Convert a Hugging Face model to a GGUF model (the base an exported adapter is applied to)."""
    from pipeline.export import merged

    q = quantize.value if quantize else None
    check_output(output, force)
    _show(_run(merged.export_merged, None, base, output, "gguf", outtype.value, q, force))
    if verify:
        _verify(base, output)


def verify_gguf(
    hf: Annotated[Path, typer.Option(help="Base model's Hugging Face folder")],
    gguf_model: Annotated[Path, typer.Option("--gguf", help="GGUF model: the base, or a merged export")],
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder (reference side)")] = None,
    lora: Annotated[Path | None, typer.Option(help="GGUF adapter to apply in llama.cpp")] = None,
    text: Annotated[str | None, typer.Option(help="Text to evaluate (default: a writer prompt)")] = None,
    tolerance: Annotated[float | None, typer.Option(**ranged("Max relative difference", above=0))] = None,
) -> None:
    """Evaluate the same tokens in llama.cpp and transformers (+PEFT); exit 1 if the logits differ."""
    if lora and not adapter:
        raise typer.BadParameter("--lora needs --adapter (the PEFT folder it was exported from)")
    _verify(hf, gguf_model, adapter, lora, text, tolerance)


def verify_quant(
    gguf_model: Annotated[
        Path, typer.Option("--gguf", help="Quantized GGUF model (export-base/-merged --quantize)")
    ],
    reference: Annotated[Path, typer.Option(help="The F16 GGUF it was quantized from")],
    hf: Annotated[
        Path,
        typer.Option(help="Hugging Face folder with the tokenizer and chat template the rows render with"),
    ],
    data: Annotated[Path, typer.Option(help="Held-out rows in the training format (messages)")],
    lora: Annotated[
        Path | None,
        typer.Option(help="GGUF adapter applied on both files: measures the adapter on the quantized base"),
    ] = None,
    judge_as: Annotated[
        Quant | None,
        typer.Option("--as", help="Judge by this type's tolerance (default: the file's own type)"),
    ] = None,
    rows: Annotated[int, typer.Option(**ranged("Rows of --data to measure (the first ones)", min=1))] = 32,
    max_tokens: Annotated[
        int, typer.Option(**ranged("Skip rows longer than this many tokens", min=1))
    ] = 2048,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Also write the report (JSON) here")
    ] = None,
    sidecar: Annotated[
        bool, typer.Option(help="Keep the result beside the GGUF (<file>.distance.json)")
    ] = True,
    force: Force = False,
) -> None:
    """Measure a quantized GGUF against its F16 file in llama.cpp on held-out answer tokens; exit 1 if
    it is further than its type's tolerance."""
    from pipeline.evaluate.records import InputError, read_jsonl
    from pipeline.export import distance

    if output is not None:
        check_output(output, force)
    try:
        held_out = read_jsonl(data)[:rows]
        with Progress(*_BAR, console=console, transient=True) as bar:
            task = bar.add_task("measuring rows", total=len(held_out))
            as_type = judge_as.value if judge_as else None
            m = distance.measure(
                gguf_model, reference, hf, held_out, lora, as_type, max_tokens, lambda n: bar.advance(task, n)
            )
    except (InputError, ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    m.data = str(data)
    _show_distance(m)
    if sidecar:
        console.print(f"wrote {escape(str(distance.write_sidecar(gguf_model, m)))}")
    if output is not None:
        from plumbing.atomic import write_text

        write_text(output, json.dumps(m.to_json(), indent=2) + "\n")
        console.print(f"wrote {escape(str(output))}")
    if not m.passed:
        raise typer.Exit(1)


def _show_distance(m) -> None:
    d, t = m.distance, m.tolerance
    table = Table(
        title=f"{m.quant} vs {m.reference}"
        + (f", both with {m.lora}" if m.lora else "")
        + f": {d.rows} rows, {d.tokens} answer tokens"
    )
    for col in ("measure", "measured", f"tolerance ({m.judged_as})"):
        table.add_column(col, justify="right")
    table.add_row("mean KL(F16 || quant)", f"{d.mean_kl:.5f}", f"<= {t.mean_kl:g}")
    table.add_row("max KL", f"{d.max_kl:.4f}", "")
    table.add_row("top-1 agreement", f"{d.top1:.2%}", f">= {t.top1:.1%}")
    table.add_row("answer perplexity F16 -> quant", f"{d.ppl_f16:.3f} -> {d.ppl_quant:.3f}", "")
    table.add_row("perplexity ratio", f"{d.ppl_ratio:.4f}", f"<= {t.ppl_ratio:g}")
    Console().print(table)
    if m.skipped_too_long:
        console.print(f"[yellow]skipped {m.skipped_too_long} rows longer than --max-tokens[/yellow]")
    if d.tokens < FEW_TOKENS:
        console.print(
            f"[yellow]note:[/yellow] only {d.tokens} answer tokens: top-1 agreement and the perplexity ratio "
            "move by whole tokens at this size; give more --rows for a firmer verdict"
        )
    if m.passed:
        console.print(f"PASS: within the {m.judged_as} tolerance")
    else:
        console.print(f"FAIL: outside the {m.judged_as} tolerance: {escape('; '.join(m.misses))}")


def register(root: typer.Typer) -> None:
    root.command("export-gguf")(export_gguf)
    root.command("export-merged")(needs("export-merged", "train")(export_merged))
    root.command("export-base")(export_base)
    root.command("verify-gguf")(needs("verify-gguf", "train", "llama")(verify_gguf))
    root.command("verify-quant")(needs("verify-quant", "train", "llama")(verify_quant))
