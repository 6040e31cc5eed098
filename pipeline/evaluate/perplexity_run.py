"""`eval perplexity` as a run: its options (declared once; the command's flags are generated from them),
then score the held-out rows with the base model (and the adapter), show and write the result."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from pipeline.evaluate import display
from pipeline.evaluate.display import console
from pipeline.flags import fail, option


@dataclass(frozen=True)
class PerplexityOptions:
    """The models and held-out rows, how they are batched, and where the result goes."""

    base: str = option(MISSING, "Base model: a local Hugging Face folder")
    data: Path = option(MISSING, "Held-out rows in the training format (messages)")
    adapter: Path | None = option(None, "A PEFT adapter folder: compared with the base")
    batch_size: int = option(4, "Rows per forward pass", min=1, max=4096)
    max_tokens: int = option(4096, "Skip rows longer than this many tokens", min=1)
    out: Path | None = option(None, "Folder for perplexity.json", "-o", "--output")
    force: bool = option(False, "Replace the files this writes in the output folder", "--force")


def run(opts: PerplexityOptions) -> None:
    """Held-out loss and perplexity, base against fine-tuned: a table, and perplexity.json with -o."""
    from pipeline.evaluate import perplexity, records
    from plumbing.atomic import check_outputs

    if opts.out is not None:
        check_outputs(opts.out, ("perplexity.json",), opts.force)
    try:
        rows = records.read_jsonl(opts.data)
        with display.progress() as bars:
            task = bars.add_task("scoring rows", total=len(rows) * (2 if opts.adapter else 1))
            advance = lambda n: bars.advance(task, n)  # noqa: E731
            result = perplexity.run(opts.base, opts.adapter, rows, opts.batch_size, opts.max_tokens, advance)
    except (records.InputError, perplexity.PerplexityError) as e:
        fail(str(e))
    adapter = str(opts.adapter) if opts.adapter else None
    result.update(base_model=opts.base, adapter_path=adapter, data=str(opts.data))
    _show(result, opts)
    if opts.out:
        records.write_json(opts.out / "perplexity.json", result)
        console.print(f"wrote {opts.out / 'perplexity.json'}")


def _show(result: dict, opts: PerplexityOptions) -> None:
    """The table of losses and perplexities, and how many rows were too long to score."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{opts.data.name}: {result['rows']} rows")
    for col in ("model", "answer loss", "answer perplexity", "answer tokens", "assistant perplexity"):
        table.add_column(col, justify="right")
    for name in ("base", "adapter"):
        if name in result:
            a, t = result[name]["answer"], result[name]["assistant"]
            table.add_row(
                name, f"{a['loss']:.4f}", f"{a['perplexity']:.3f}", str(a["tokens"]), f"{t['perplexity']:.3f}"
            )
    Console().print(table)
    if result["skipped_too_long"]:
        console.print(
            f"[yellow]skipped {result['skipped_too_long']} rows longer than {opts.max_tokens} tokens[/yellow]"
        )
