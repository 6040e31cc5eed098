"""`story-demo -o DIR`: the whole chain on a CPU, on the small real model, in one command.

books -> windows -> a real local teacher (SmolLM2 in-process through llama.cpp) -> rows -> LoRA SFT ->
perplexity base against tuned -> GGUF adapter + verify-gguf -> merged Q4 -> Modelfile -> served by the
local engine -> eval compare base against tuned -> passages through the bot core (the console) ->
ratings -> feedback export -> KTO -> eval compare again; then DIR/report.md, every figure from this run.

Each step is the pipeline's own verb, called in-process with the arguments the report lists, so the
demo is the README's commands run one after the other; only the console's writer is played by code
(it rates a passage 👍 when the model wrote it in the trained format, 👎 otherwise).
`--quick` swaps the student for a tiny random model (seconds to train) and shrinks every size, so a
test runs the whole chain in a couple of minutes; the teacher is the real SmolLM2 either way.
"""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console

from contract import atomic

console = Console(stderr=True)
BOOKS = Path(__file__).resolve().parent.parent / "examples" / "books"


class DemoError(RuntimeError):
    """A step failed; the message names it and where its output is."""


@dataclass(frozen=True)
class Sizes:
    student: str  # smollm2 or tiny
    context_sentences: int
    continuation_sentences: int
    teacher_items: int
    teacher_tokens: int
    teacher_retries: int
    train_steps: int
    max_length: int
    eval_contexts: int
    num_predict: int  # per output of eval compare and per console passage
    stories: int  # console stories, two takes each
    kto_steps: int


FULL = Sizes("smollm2", 8, 3, 14, 160, 2, 40, 512, 4, 192, 2, 8)
QUICK = Sizes("tiny", 3, 1, 5, 90, 1, 3, 512, 2, 24, 1, 2)


@dataclass
class Step:
    name: str
    command: str
    seconds: float = 0.0
    code: int = 0


@dataclass
class Run:
    out: Path
    sizes: Sizes
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the report must say about this run

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def verb(run: Run, name: str, *args: object, allow: tuple[int, ...] = (0,)) -> int:
    """Run `story-pipeline ARGS` in-process (the verb's own code), timed and recorded for the report."""

    from pipeline.cli import app

    argv = [str(a) for a in args]
    step = Step(name, "story-pipeline " + shlex.join(argv))
    run.steps.append(step)
    console.rule(f"[bold]{len(run.steps)}. {name}[/bold]")
    console.print(f"[dim]$ {step.command}[/dim]")
    started = time.monotonic()
    try:
        code = typer.main.get_command(app).main(argv, prog_name="story-pipeline", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    step.seconds, step.code = time.monotonic() - started, int(code or 0)
    if step.code not in allow:
        raise DemoError(f"step {len(run.steps)} ({name}) failed with exit code {step.code}: {step.command}")
    return step.code


def timed(run: Run, name: str, command: str):
    """A step of the demo's own (the console session), timed like the verbs."""
    step = Step(name, command)
    run.steps.append(step)
    console.rule(f"[bold]{len(run.steps)}. {name}[/bold]")
    return step


# --- the chain -----------------------------------------------------------------------------------
def run_demo(out: Path, quick: bool = False) -> Path:
    """Run every step into `out`; returns the report's path."""
    from contract import smollm2

    sizes = QUICK if quick else FULL
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} is not empty: give a new folder (every step of the demo writes into it)")
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, sizes)
    started = time.monotonic()
    teacher_gguf = smollm2.gguf_path()
    s, p = sizes, run.path

    base = p("base")
    if s.student == "tiny":
        verb(run, "the student: a tiny random model", "models", "tiny", "--books", BOOKS, "--arch", "llama",
             "-o", base)  # fmt: skip
    else:
        verb(run, "the student: SmolLM2-135M as a Hugging Face folder", "models", "smollm2", "-o", base)
    # Windows sized in the student's tokens, so every training row fits --max-length whole.
    verb(run, "books to windows", "data", "gutenberg", BOOKS, "-o", p("chunks.jsonl"),
         "--context-sentences", s.context_sentences, "--continuation-sentences", s.continuation_sentences,
         "--tokenizer", base, "--max-length", s.max_length,
         "--reasoning-tokens", s.teacher_tokens)  # fmt: skip
    contexts = held_out(p("chunks.jsonl"), p("contexts.jsonl"), s.eval_contexts)
    verb(run, "a real local teacher writes the reasoning", "reason", p("chunks.jsonl"),
         "-o", p("data", "train.jsonl"), "--teacher", "smollm2", "--backend", "llama.cpp",
         "--limit", s.teacher_items, "--max-tokens", s.teacher_tokens, "--retries", s.teacher_retries,
         "--concurrency", 1, "--backoff", 0, allow=(0, 1))  # fmt: skip
    balance_splits(run)

    lr = 1e-3  # a few rows, a few steps: enough to learn the <reasoning>/<answer> format
    train_args = ("--no-qlora", "--no-gradient-checkpointing", "--target-modules", "all-linear",
                  "--batch-size", 1, "--grad-accum", 1,
                  "--max-length", s.max_length, "--log-steps", 1, "--lr", lr)  # fmt: skip
    verb(run, "LoRA SFT on the teacher's rows", "train", "--base", base, "-o", p("adapter"),
         "--data", p("data", "train.jsonl"), "--eval-data", p("data", "val.jsonl"),
         "--max-steps", s.train_steps, "--eval-steps", max(1, s.train_steps // 2), *train_args)  # fmt: skip
    verb(run, "held-out perplexity, base against tuned", "eval", "perplexity", "--base", base,
         "--adapter", p("adapter"), "--data", p("data", "val.jsonl"), "-o", p("eval"))  # fmt: skip
    verb(
        run,
        "the adapter as a GGUF LoRA",
        "export-gguf",
        p("adapter"),
        "--base",
        base,
        "-o",
        p("writer-lora.gguf"),
    )
    verb(run, "the base as a GGUF", "export-base", base, "-o", p("base-f16.gguf"))
    verb(run, "llama.cpp against transformers+PEFT", "verify-gguf", "--hf", base, "--gguf",
         p("base-f16.gguf"), "--adapter", p("adapter"), "--lora", p("writer-lora.gguf"))  # fmt: skip
    verb(run, "merged and quantized to Q4", "export-merged", p("adapter"), "--base", base, "--format", "gguf",
         "--quantize", "q4_k_m", "-o", p("writer-q4.gguf"))  # fmt: skip
    verb(
        run, "a Modelfile for Ollama", "modelfile", "--from", p("writer-q4.gguf"), "-o", p("Writer.Modelfile")
    )
    base_gguf = teacher_gguf if s.student == "smollm2" else p("base-f16.gguf")
    models = {"base": base_gguf, "tuned": p("writer-q4.gguf")}
    compare(run, "eval compare: base against tuned", models, p("eval", "compare-1"))

    transcript = console_session(run, p("writer-q4.gguf"), p("story-bot.db"), contexts)
    verb(run, "feedback export (KTO rows from the ratings)", "feedback", "export", "--db", p("story-bot.db"),
         "--format", "kto", "-o", p("feedback", "kto.jsonl"))  # fmt: skip
    labels = _labels(p("feedback", "kto.jsonl"))
    if labels == {True, False}:  # KTO weighs the liked against the disliked: it needs both
        verb(run, "KTO from the ratings, on the SFT adapter", "train", "--method", "kto", "--base", base,
             "--adapter", p("adapter"), "--data", p("feedback", "kto.jsonl"), "-o", p("adapter-kto"),
             "--max-steps", s.kto_steps, *train_args[:-2], "--batch-size", 2)  # fmt: skip
        verb(run, "the KTO model merged and quantized to Q4", "export-merged", p("adapter-kto"), "--base",
             base, "--format", "gguf", "--quantize", "q4_k_m", "-o", p("writer-kto-q4.gguf"))  # fmt: skip
        models["tuned+kto"] = p("writer-kto-q4.gguf")
    else:
        found = {True: "only liked", False: "only disliked"}.get(next(iter(labels)), "") if labels else "no"
        run.notes.append(
            f"The feedback export found {found} rated passages in the trained format (it keeps only "
            "those), and KTO needs both liked and disliked ones, so that step was skipped; the second "
            "table compares the same models with new seeds."
        )
    compare(run, "eval compare again: " + ", ".join(models), models, p("eval", "compare-2"), seed=2)

    report = write_report(run, transcript, time.monotonic() - started)
    console.rule("[bold]the table[/bold]")
    Console().print(p("eval", "compare-2", "table.md").read_text(encoding="utf-8"))
    console.print(f"report: {report} ({time.monotonic() - started:.0f} s in all)")
    return report


def compare(run: Run, name: str, models: dict[str, Path], out: Path, seed: int = 1) -> None:
    s = run.sizes
    verb(run, name, "eval", "compare", "--engine", "llama.cpp",
         *[a for label, f in models.items() for a in ("--model", f"{label}={f}")],
         "--contexts", run.path("contexts.jsonl"), "--reference-field", "continuation", "--length", "short",
         "--num-predict", s.num_predict, "--temperature", 0.7, "--seed", seed, "--n-ctx", 2048,
         "-o", out, allow=(0, 1))  # fmt: skip


def balance_splits(run: Run) -> None:
    """Training needs a row in each split. A small teacher may leave one split empty: then the last row
    of the other is moved over, and the report says so; with fewer than two rows the demo stops."""
    from contract.jsonl import write as write_jsonl
    from pipeline.data.gutenberg import read_jsonl

    train, val = (run.path("data", f) for f in ("train.jsonl", "val.jsonl"))
    rows = {f: list(read_jsonl(f)) if f.exists() else [] for f in (train, val)}
    if len(rows[train]) + len(rows[val]) < 2:
        raise DemoError(
            f"the teacher wrote {len(rows[train]) + len(rows[val])} usable row(s), too few to train on (each "
            f"reply and why it was refused: {run.path('data', 'train.failed.jsonl')}): run the demo again"
        )
    for empty, full in ((val, train), (train, val)):
        if not rows[empty]:
            rows[empty].append(rows[full].pop())
            write_jsonl(full, rows[full])
            write_jsonl(empty, rows[empty])
            run.notes.append(
                f"The teacher wrote no row for {empty.name}: one row of {full.name} was moved there."
            )


def held_out(chunks: Path, out: Path, n: int) -> list[dict]:
    """The last `n` validation windows (the teacher's --limit takes the first ones), as contexts with
    the human continuation as reference."""
    rows = [json.loads(line) for line in chunks.read_text(encoding="utf-8").splitlines() if line.strip()]
    val = [r for r in rows if r.get("split") == "validation"] or rows
    chosen = val[-n:]
    atomic.write_text(out, "".join(json.dumps({"context": r["context"], "continuation": r["continuation"]},
                                              ensure_ascii=False) + "\n" for r in chosen))  # fmt: skip
    return chosen


def _labels(path: Path) -> set[bool]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return {bool(json.loads(line)["label"]) for line in lines if line.strip()}


def _rows(path: Path) -> int:
    return (
        sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if path.exists()
        else 0
    )


# --- the console, driven -------------------------------------------------------------------------
def console_session(run: Run, gguf: Path, db: Path, contexts: list[dict]) -> str:
    """Stories grown through the bot core on the local engine: an opening, /continue, a rating, a
    /regenerate, a rating. The writer likes a passage in the trained format (reasoning, then an answer
    with no stray tags) and dislikes the others."""
    step = timed(run, "passages through the bot core (console, local engine)",
                 f"story-bot console --gguf {gguf} --db {db}")  # fmt: skip
    started = time.monotonic()
    transcript = asyncio.run(_session(gguf, db, contexts[: run.sizes.stories], run.sizes.num_predict))
    step.seconds = time.monotonic() - started
    console.print(transcript)
    return transcript


async def _session(gguf: Path, db: Path, contexts: list[dict], num_predict: int) -> str:
    from bot.console import Console as BotConsole
    from bot.core.service import Limits, StoryService
    from bot.core.story import Member
    from bot.local import LlamaCppBackend
    from bot.store import Store

    class Capped(LlamaCppBackend):  # the demo's budget per passage, whatever length the context asks
        def generate(self, model, request, options):
            return super().generate(model, request, {**options, "num_predict": num_predict})

    store, backend = Store(db), Capped(gguf, n_ctx=2048)
    service = StoryService(store, backend, lambda channel: "writer", limits=Limits())  # unseeded: takes vary
    out = io.StringIO()
    bot = BotConsole(service, out, Member("console:demo", "demo writer"))
    try:
        for n, ctx in enumerate(contexts):
            lines = [] if n == 0 else ["/new"]
            lines += [" ".join(ctx["context"].split()[-60:]), "/continue --length short"]
            for line in lines:
                out.write(f"> {line}\n")
                await bot.handle(line)
            for again in (False, True):
                if again:
                    out.write("> /regenerate\n")
                    await bot.handle("/regenerate")
                rating = "+1" if _liked(service, bot) else "-1"
                out.write(f"> /rate {rating}\n")
                await bot.handle(f"/rate {rating}")
    finally:
        await service.aclose()
        await backend.close()
        store.close()
    return out.getvalue()


def _liked(service, bot) -> bool:
    from bot.console import CHANNEL
    from contract import prompt

    last = service.show(CHANNEL).last
    if last is None or not last.by_model:
        return False
    row = service.store.conn.execute("SELECT output FROM generations WHERE id = ?", (last.generation_id,))
    parsed = prompt.parse_output(row.fetchone()["output"] or "")
    return bool(parsed.reasoning and parsed.answer and not parsed.issues)


# --- the report ----------------------------------------------------------------------------------
GPU_COMMANDS = """\
```bash
# On a GPU machine with Ollama (https://ollama.com) and the base folder
# (huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir models/Qwen2.5-7B-Instruct):
story-pipeline data gutenberg examples/books /path/to/more/books -o work/chunks.jsonl \\
    --tokenizer models/Qwen2.5-7B-Instruct --max-length 4096
ollama pull qwen2.5:32b
story-pipeline reason work/chunks.jsonl -o work/data/train.jsonl --teacher qwen2.5:32b --backend ollama
story-pipeline train --base models/Qwen2.5-7B-Instruct -o work/adapter --data work/data/train.jsonl \\
    --eval-data work/data/val.jsonl --max-length 4096
story-pipeline eval perplexity --base models/Qwen2.5-7B-Instruct --adapter work/adapter \\
    --data work/data/val.jsonl -o work/eval
story-pipeline export-gguf work/adapter --base models/Qwen2.5-7B-Instruct -o work/writer-lora.gguf
story-pipeline export-merged work/adapter --base models/Qwen2.5-7B-Instruct --format gguf \\
    --quantize q4_k_m -o work/writer-q4.gguf
story-pipeline modelfile --from work/writer-q4.gguf -o work/Writer.Modelfile
ollama create writer -f work/Writer.Modelfile
grep '"split": "validation"' work/chunks.jsonl | head -50 > work/contexts.jsonl    # held-out windows
story-pipeline eval compare --model base=qwen2.5:7b-instruct --model tuned=writer \\
    --contexts work/contexts.jsonl --reference-field continuation -o work/eval/compare
story-bot console --model writer --db work/story-bot.db      # or the Discord bot: story-bot run
story-pipeline feedback export --db work/story-bot.db --format kto -o work/feedback/kto.jsonl
story-pipeline train --method kto --base models/Qwen2.5-7B-Instruct --adapter work/adapter \\
    --data work/feedback/kto.jsonl -o work/adapter-kto
```
"""


def write_report(run: Run, transcript: str, seconds: float) -> Path:
    p, s = run.path, run.sizes
    student = "SmolLM2-135M-Instruct" if s.student == "smollm2" else "a tiny random Llama (--quick)"
    lines = [
        "# The whole chain on one CPU",
        "",
        f"Student: {student}; teacher: SmolLM2-135M-Instruct (Q4_1 GGUF) run in-process by llama.cpp. "
        f"Wall time: {seconds:.0f} s. Every figure below was measured in this run; the files it came from "
        "are named beside it.",
        "",
        *[f"**Note:** {n}" for n in run.notes],
        "",
        "## The steps",
        "",
        "| # | step | seconds | command |",
        "| ---: | --- | ---: | --- |",
        *[f"| {i} | {st.name} | {st.seconds:.1f} | `{st.command}` |" for i, st in enumerate(run.steps, 1)],
        "",
        "## The teacher",
        "",
        *_teacher_section(p("data")),
        "## Held-out perplexity (eval/perplexity.json)",
        "",
        *_perplexity_section(p("eval", "perplexity.json")),
        "## Base against tuned (eval/compare-1)",
        "",
        p("eval", "compare-1", "table.md").read_text(encoding="utf-8"),
        "",
        "![base against tuned](eval/compare-1/chart.png)",
        "",
        "## Sample continuations, side by side",
        "",
        *_samples(p("contexts.jsonl"), p("eval", "compare-1", "outputs.jsonl")),
        "## The console session (bot core on the local engine, story-bot.db)",
        "",
        "```text",
        transcript.rstrip(),
        "```",
        "",
        "## After the ratings (eval/compare-2)",
        "",
        p("eval", "compare-2", "table.md").read_text(encoding="utf-8"),
        "",
        "![the models again](eval/compare-2/chart.png)",
        "",
        "Training curves: ![SFT loss](adapter/loss.png)"
        + (" ![KTO loss](adapter-kto/loss.png)" if p("adapter-kto", "loss.png").exists() else ""),
        "",
        "## The same with a 7B on a GPU and Ollama",
        "",
        GPU_COMMANDS,
    ]
    atomic.write_text(p("report.md"), "\n".join(lines) + "\n")
    return p("report.md")


def _teacher_section(data: Path) -> list[str]:
    from collections import Counter

    from pipeline.data.teacher import reason_kind

    log = [json.loads(x) for x in (data / "train.failed.jsonl").read_text(encoding="utf-8").splitlines()
           if x.strip()] if (data / "train.failed.jsonl").exists() else []  # fmt: skip
    reasons = Counter(reason_kind(t["reason"]) for e in log for t in e.get("tries", []))
    lines = [f"{_rows(data / 'train.jsonl')} train rows and {_rows(data / 'val.jsonl')} validation rows "
             f"accepted; {sum(e['status'] == 'failed' for e in log)} items failed every try "
             "(data/train.failed.jsonl keeps each try's reply and reason).", ""]  # fmt: skip
    if reasons:
        lines += ["| rejected tries | reason |", "| ---: | --- |"]
        lines += [f"| {n} | {r} |" for r, n in reasons.most_common()]
        lines.append("")
    return lines


def _perplexity_section(path: Path) -> list[str]:
    r = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| model | answer loss | answer perplexity | answer tokens |", "| --- | ---: | ---: | ---: |"]
    for name in ("base", "adapter"):
        if name in r:
            a = r[name]["answer"]
            lines.append(f"| {name} | {a['loss']:.4f} | {a['perplexity']:.3f} | {a['tokens']} |")
    return [*lines, ""]


def _samples(contexts: Path, outputs: Path, n: int = 2) -> list[str]:
    from contract import prompt

    ctxs = [json.loads(x) for x in contexts.read_text(encoding="utf-8").splitlines() if x.strip()]
    outs = [json.loads(x) for x in outputs.read_text(encoding="utf-8").splitlines() if x.strip()]
    lines = []
    for i, ctx in enumerate(ctxs[:n]):
        cells = {"human (reference)": ctx["continuation"]}
        for o in outs:
            if o["context_index"] == i and o["sample"] == 0:
                parsed = prompt.parse_output(o["output"])
                cells[o["model"]] = parsed.answer or o["output"]
        tail = " ".join(ctx["context"].split()[-40:])
        lines += [f"**Context {i + 1}** (its end): …{tail}", ""]
        lines += ["| " + " | ".join(cells) + " |", "|" + " --- |" * len(cells)]
        lines += ["| " + " | ".join(_cell(t) for t in cells.values()) + " |", ""]
    return lines


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:600] or "(empty)"
