"""`story-demo -o DIR`: the whole chain on a CPU, on the small real model, in one command.

books -> windows -> a real local teacher (SmolLM2 in-process through llama.cpp) -> rows -> LoRA SFT ->
perplexity base against tuned -> GGUF adapter + verify-gguf -> merged Q4 -> Modelfile -> served by the
local engine -> eval compare base against tuned -> passages through the bot core (the console) ->
ratings, takes, edits, erasures -> feedback export -> DPO (--quick: KTO) -> eval compare again; then
DIR/report.md, every figure from this run.

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
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import typer
from rich.console import Console

from contract import prompt
from demo import panel
from plumbing import atomic

console = Console(stderr=True)
REPO = Path(__file__).resolve().parent.parent
BOOKS = REPO / "examples" / "books"
# More of the repository's own public-domain books (the tests' corpus), for more windows to train on.
MORE_BOOKS = [REPO / "tests" / "corpus" / f for f in ("pg1661-sherlock-holmes.txt", "pg84-frankenstein.txt")]


class DemoError(RuntimeError):
    """A step failed; the message names it and where its output is."""


@dataclass(frozen=True)
class Sizes:
    student: str  # smollm2 or tiny
    context_sentences: int
    continuation_sentences: int
    asked_words: int  # the length the console and the comparisons ask for, near the books' windows
    teacher_items: int
    teacher_tokens: int
    teacher_retries: int
    train_rows: int  # rows with a derived reasoning beside the teacher's (demo/rows.py)
    val_rows: int
    train_steps: int  # at most: early stopping on the held-out rows may end sooner
    batch_size: int
    lr: float
    eval_steps: int
    max_length: int
    eval_contexts: int  # held-out contexts the panel judges, each naming a character
    samples: int  # outputs per held-out context and model
    num_predict: int  # per output of eval compare and per console passage
    stories: int  # console stories, two takes each
    preference: str  # dpo or kto, on the writers' feedback, from the SFT adapter
    preference_steps: int
    preference_lr: float
    preference_sft_weight: float  # DPO: an SFT term on the chosen replies beside the preference (RPO)


# SmolLM2 on 2 cores with AVX-512: ~9 s an SFT step of 4 rows, ~1 s an output of 160 tokens in
# llama.cpp; with AVX2 only (2026-12-07), ~17 s an SFT step and ~19 s a DPO step (the reference's
# log-probs computed once per pair). 20 steps see 80 rows once; early stopping keeps the best. The
# stories: on one AVX2 machine, 20 gave 15 pairs and the panel liked SFT+DPO as often as SFT (2/24
# each); 30 gave 26 pairs (8 of them edits) and 5/24 against 2/24, 77 s of the console. On one such
# session's feedback (measured by hand, 20 held-out outputs each): KTO for 6 steps at 1e-4 left the
# model as it was (liked 1/20), 12 steps named more but broke the format (in format 0.80 -> 0.45);
# DPO alone at 2e-4 broke it too (0.30); DPO with an SFT term on the chosen replies at 5e-4 kept it
# (0.60) and named more (0.05 -> 0.15), liked 2/20. On a 40-story session's feedback (48 held-out
# outputs each), that DPO still broke the format (in format 0.73 -> 0.40) until the takes the model
# wrote out of format were rejected sides too (retry pairs: 0.79); lr 2e-4 (0.58) or beta 0.5 (0.29)
# did not keep it. On a 30-story session's feedback (48 outputs), an SFT weight of 2 kept it where 1
# did not (0.69 against 0.42) and the panel liked 6/48 (SFT: 0/48). 10 DPO steps took one run
# of the demo to 652 s (559 s on a quieter one); 8 keep it near 510 s. On a 2-core AVX512_BF16 machine
# (2026-12-07) the demo took 710 s in fp32 and 596-674 s in bf16 (`_precision`); the panel liked SFT 0/24
# and SFT+DPO 1/24 in the first, 3/24 and 0/24 in the second; judged again on 96 outputs each, 11/96
# against 17/96 and 7/96 against 7/96 (fp32 DPO on the second's feedback: 7/96 too, so not the precision).
# The writers asking again for a take the model failed to write (13 of 30 stories) gave 61 pairs
# instead of 24, but 774 s and a DPO that broke the format (0.75 -> 0.42): not kept.
# Scoring only the labelled positions in TRL's LM head on a CPU (train) took the bf16 demo to 449 s
# (SFT 145 s, DPO 78 s), the same results; the time saved buys 45 stories (50 pairs, 10 DPO steps so
# each is seen): 498 s, and on 96 held-out outputs SFT+DPO liked 14 times against SFT's 7 (13 wins, 6
# losses), where the 30 stories' DPO was liked 7 times (2026-12-07). But the report's 24 outputs gave
# 3 against 3, and 48 (`--samples 4`) took 618 s. Decoding each model's outputs together (`eval compare`
# on llama.cpp, engines/local_batch.py) judged 48 in 86 s where one at a time took 130 s: 555 s in all,
# SFT+DPO liked 5 of 48 against SFT's 1 (the same models; the outputs differ with the batch's rounding);
# 512 s when run again. Trained in fp32 there (as without native bf16): 593 s, 9 of 48 against 2.
FULL = Sizes(
    student="smollm2",
    context_sentences=3,
    continuation_sentences=3,
    asked_words=40,
    teacher_items=4,
    teacher_tokens=160,
    teacher_retries=1,
    train_rows=80,
    val_rows=12,
    train_steps=20,
    batch_size=4,
    lr=1e-3,
    eval_steps=10,
    max_length=384,
    eval_contexts=12,
    samples=4,
    num_predict=160,
    stories=45,
    preference="dpo",
    preference_steps=10,
    preference_lr=5e-4,
    preference_sft_weight=2.0,
)
QUICK = Sizes(
    student="tiny",
    context_sentences=3,
    continuation_sentences=1,
    asked_words=40,
    teacher_items=5,
    teacher_tokens=90,
    teacher_retries=1,
    train_rows=24,
    val_rows=8,
    train_steps=6,
    batch_size=4,
    lr=1e-3,
    eval_steps=2,
    max_length=384,
    eval_contexts=2,
    samples=1,
    num_predict=24,
    stories=1,
    preference="kto",
    preference_steps=2,
    preference_lr=5e-5,
    preference_sft_weight=0.0,
)


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
    rows: dict[str, dict] = field(default_factory=dict)  # data file -> rows by source
    preference_skipped: str | None = None  # why the preference step did not run, when it did not
    actions: Counter = field(default_factory=Counter)  # the panel writers' actions in the console
    feedback: dict = field(default_factory=dict)  # the preference file's rows by action (feedback_counts)
    trained_on: dict = field(default_factory=dict)  # the rows the preference step read, by action

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
def run_demo(out: Path, quick: bool = False, samples: int | None = None) -> Path:
    """Run every step into `out`; returns the report's path. `samples` overrides the sizes' outputs per
    held-out context and model."""
    from engines import smollm2

    sizes = QUICK if quick else FULL
    sizes = replace(sizes, samples=samples) if samples else sizes
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} is not empty: give a new folder (every step of the demo writes into it)")
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, sizes)
    started = time.monotonic()
    teacher_gguf = smollm2.gguf_path()
    s, p = sizes, run.path

    base = p("base")
    if s.student == "tiny":
        verb(
            run,
            "the student: a tiny random model",
            "models",
            "tiny",
            "--books",
            BOOKS,
            "--arch",
            "llama",
            "-o",
            base,
        )
    else:
        verb(run, "the student: SmolLM2-135M as a Hugging Face folder", "models", "smollm2", "-o", base)
    # Windows sized in the student's tokens, so every training row fits --max-length whole.
    books = [BOOKS, *(b for b in MORE_BOOKS if b.is_file())]
    verb(
        run,
        "books to windows",
        "data",
        "gutenberg",
        *books,
        "-o",
        p("chunks.jsonl"),
        "--context-sentences",
        s.context_sentences,
        "--continuation-sentences",
        s.continuation_sentences,
        "--tokenizer",
        base,
        "--max-length",
        s.max_length,
        "--reasoning-tokens",
        s.teacher_tokens,
    )
    contexts = held_out(p("chunks.jsonl"), p("contexts.jsonl"), s.eval_contexts)
    verb(
        run,
        "a real local teacher writes the reasoning",
        "reason",
        p("chunks.jsonl"),
        "-o",
        p("teacher", "train.jsonl"),
        "--teacher",
        "smollm2",
        "--backend",
        "llama.cpp",
        "--limit",
        s.teacher_items,
        "--max-tokens",
        s.teacher_tokens,
        "--retries",
        s.teacher_retries,
        "--concurrency",
        1,
        "--backoff",
        0,
        allow=(0, 1),
    )
    with_derived_rows(run, contexts)

    # No sample generations at evaluations: the panel judges the outputs after training, and they
    # would slow the demo on a CPU.
    train_args = (
        "--precision",
        _precision(s),
        "--no-qlora",
        "--no-gradient-checkpointing",
        "--target-modules",
        "all-linear",
        "--batch-size",
        s.batch_size,
        "--grad-accum",
        1,
        "--sample-contexts",
        0,
        "--max-length",
        s.max_length,
        "--log-steps",
        1,
        "--lr",
        s.lr,
    )
    verb(
        run,
        "LoRA SFT, early stopping on the held-out rows",
        "train",
        "--base",
        base,
        "-o",
        p("adapter"),
        "--data",
        p("data", "train.jsonl"),
        "--eval-data",
        p("data", "val.jsonl"),
        "--max-steps",
        s.train_steps,
        "--eval-steps",
        s.eval_steps,
        "--early-stopping",
        2,
        "--warmup",
        0.1,
        *train_args,
    )
    verb(
        run,
        "held-out perplexity, base against tuned",
        "eval",
        "perplexity",
        "--base",
        base,
        "--adapter",
        p("adapter"),
        "--data",
        p("data", "val.jsonl"),
        "-o",
        p("eval"),
    )
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
    verb(
        run,
        "llama.cpp against transformers+PEFT",
        "verify-gguf",
        "--hf",
        base,
        "--gguf",
        p("base-f16.gguf"),
        "--adapter",
        p("adapter"),
        "--lora",
        p("writer-lora.gguf"),
    )
    verb(
        run,
        "merged and quantized to Q4",
        "export-merged",
        p("adapter"),
        "--base",
        base,
        "--format",
        "gguf",
        "--quantize",
        "q4_k_m",
        "-o",
        p("writer-q4.gguf"),
    )
    verb(
        run, "a Modelfile for Ollama", "modelfile", "--from", p("writer-q4.gguf"), "-o", p("Writer.Modelfile")
    )
    base_gguf = teacher_gguf if s.student == "smollm2" else p("base-f16.gguf")
    models = {"base": base_gguf, "tuned": p("writer-q4.gguf")}

    transcript = console_session(run, p("writer-q4.gguf"), p("story-bot.db"), story_openings(run))
    for fmt, what in (("kto", "ratings and erasures"), ("dpo", "edits, takes, ratings and erasures")):
        verb(
            run,
            f"feedback export: {fmt} rows from the {what}",
            "feedback",
            "export",
            "--db",
            p("story-bot.db"),
            "--format",
            fmt,
            "-o",
            p("feedback", f"{fmt}.jsonl"),
        )
    preference = concatenate(
        p("feedback", "preference.jsonl"), p("feedback", "kto.jsonl"), p("feedback", "dpo.jsonl")
    )
    run.feedback = feedback_counts(preference)
    method = s.preference
    if not (skipped := _cannot_train(method, run.feedback)):
        data = p("feedback", "dpo.jsonl") if method == "dpo" else preference
        run.trained_on = feedback_counts(data)["by_action"]
        verb(
            run,
            f"{method.upper()} from the writers' actions, on the SFT adapter",
            "train",
            "--method",
            method,
            "--base",
            base,
            "--adapter",
            p("adapter"),
            "--data",
            data,
            "-o",
            p(f"adapter-{method}"),
            "--max-steps",
            s.preference_steps,
            *train_args[:-2],
            "--lr",
            s.preference_lr,
            *(("--sft-weight", s.preference_sft_weight) if method == "dpo" else ()),
        )
        verb(
            run,
            f"the {method.upper()} model merged and quantized to Q4",
            "export-merged",
            p(f"adapter-{method}"),
            "--base",
            base,
            "--format",
            "gguf",
            "--quantize",
            "q4_k_m",
            "-o",
            p(f"writer-{method}-q4.gguf"),
        )
        models[f"tuned+{method}"] = p(f"writer-{method}-q4.gguf")
    else:
        run.preference_skipped = skipped
        run.notes.append(skipped)
    compare(run, "eval compare: " + ", ".join(models) + " on held-out contexts", models, p("eval", "compare"))

    report = write_report(run, transcript, time.monotonic() - started)
    write_report_json(run, time.monotonic() - started)
    console.rule("[bold]the table[/bold]")
    Console().print(p("eval", "compare", "table.md").read_text(encoding="utf-8"))
    console.print(f"report: {report} ({time.monotonic() - started:.0f} s in all)")
    return report


def compare(run: Run, name: str, models: dict[str, Path], out: Path, seed: int = 1) -> None:
    """Each model's outputs on the held-out contexts, the human continuation as reference; the panel
    judges the same outputs (panel_rates)."""
    s = run.sizes
    verb(
        run,
        name,
        "eval",
        "compare",
        "--engine",
        "llama.cpp",
        *[a for label, f in models.items() for a in ("--model", f"{label}={f}")],
        "--contexts",
        run.path("contexts.jsonl"),
        "--reference-field",
        "continuation",
        "--length",
        s.asked_words,
        "--samples",
        s.samples,
        "--num-predict",
        s.num_predict,
        "--temperature",
        0.7,
        "--seed",
        seed,
        "--n-ctx",
        2048,
        "-o",
        out,
        allow=(0, 1),
    )


def with_derived_rows(run: Run, contexts: list[dict]) -> None:
    """data/train.jsonl and data/val.jsonl: the teacher's rows, then rows with a derived reasoning
    (demo/rows.py) for windows the teacher did not reach, a seeded sample of each split."""
    import random

    from demo.rows import derived_rows
    from pipeline.data.gutenberg import read_jsonl
    from plumbing.jsonl import write as write_jsonl

    s, p = run.sizes, run.path
    step = timed(
        run,
        "rows with a derived reasoning for the windows the teacher did not reach",
        f"demo/rows.py: {s.train_rows} train and {s.val_rows} validation windows",
    )
    started = time.monotonic()
    teacher = {f: list(read_jsonl(p("teacher", f))) if p("teacher", f).exists() else [] for f in SPLITS}
    taught = {m["content"] for rows in teacher.values() for r in rows for m in r["messages"]}
    windows = [w for w in read_jsonl(p("chunks.jsonl")) if not any(w["continuation"] in t for t in taught)]
    for f, split, n in (("train.jsonl", "train", s.train_rows), ("val.jsonl", "validation", s.val_rows)):
        pool = [w for w in windows if w["split"] == split]
        random.Random(f).shuffle(pool)  # seeded: every book of the split has its share
        rows = teacher[f] + derived_rows(pool[:n])
        if not rows:
            raise DemoError(f"no {split} windows to train on in {p('chunks.jsonl')}: give more books")
        write_jsonl(p("data", f), rows)
        run.rows[f] = {"teacher": len(teacher[f]), "derived": len(rows) - len(teacher[f])}
    step.seconds = time.monotonic() - started
    console.print(f"rows: {run.rows}")


SPLITS = ("train.jsonl", "val.jsonl")


def story_openings(run: Run) -> list[dict]:
    """The console's stories: training windows whose opening names a character, so the held-out
    contexts the panel judges later are ones its feedback never saw; spread over every training book,
    as a community's stories are many, not one scene."""
    from pipeline.data.gutenberg import read_jsonl

    train = [w for w in read_jsonl(run.path("chunks.jsonl")) if w["split"] == "train"]
    return spread([w for w in train if panel.characters(opening(w))], run.sizes.stories)


def spread(rows: list[dict], n: int) -> list[dict]:
    """`n` rows evenly spaced over `rows` (all of them when there are no more): the whole of each book,
    not its last pages."""
    if len(rows) <= n:
        return rows
    return [rows[i * len(rows) // n] for i in range(n)]


def opening(window: dict) -> str:
    """A console story's first passage: the last 60 words of a window's context."""
    return " ".join(window["context"].split()[-60:])


def held_out(chunks: Path, out: Path, n: int) -> list[dict]:
    """`n` validation windows that name a character, spread over the held-out book, as contexts with
    the human continuation as reference."""
    rows = [json.loads(line) for line in chunks.read_text(encoding="utf-8").splitlines() if line.strip()]
    val = [r for r in rows if r.get("split") == "validation"] or rows
    chosen = spread([r for r in val if panel.characters(r["context"])], n)
    atomic.write_text(
        out,
        "".join(
            json.dumps({"context": r["context"], "continuation": r["continuation"]}, ensure_ascii=False)
            + "\n"
            for r in chosen
        ),
    )
    return chosen


def _cannot_train(method: str, feedback: dict) -> str | None:
    """Why the feedback cannot train `method` (None: it can), as the report says it."""
    if method == "dpo" and not any(k.endswith("pairs") for k in feedback["by_action"]):
        return (
            "The writers' actions gave no pair (an edit, a chosen take, a liked or edited take beside "
            "a disliked one of one passage, or an erased take or one out of format with a take kept "
            "for its prompt), and DPO trains on pairs, so that step was skipped; the panel judges "
            "base and tuned only."
        )
    if method == "kto" and feedback["labels"] != [False, True]:
        found = {(True,): "only liked", (False,): "only disliked"}.get(tuple(feedback["labels"]), "no")
        return (
            f"The writers' actions gave {found} passages in the trained format (the export keeps "
            "only those), and KTO needs both liked and disliked ones, so that step was skipped; the "
            "panel judges base and tuned only."
        )
    return None


def concatenate(out: Path, *files: Path) -> Path:
    """`cat kto.jsonl dpo.jsonl > preference.jsonl`: KTO reads the pairs unpaired (pipeline/train/rows.py)."""
    atomic.write_text(out, "".join(f.read_text(encoding="utf-8") for f in files if f.exists()))
    return out


def feedback_counts(path: Path) -> dict:
    """The preference file's rows by the writers' action, and the KTO labels they give."""
    from pipeline.data.gutenberg import read_jsonl

    rows = list(read_jsonl(path))
    labels = {r["label"] for r in rows if "label" in r} | (
        {True, False} if any("chosen" in r for r in rows) else set()
    )
    by_action = Counter(f"{r['source']['action']} {'pairs' if 'chosen' in r else 'rows'}" for r in rows)
    return {"rows": len(rows), "by_action": dict(sorted(by_action.items())), "labels": sorted(labels)}


def _rows(path: Path) -> int:
    return (
        sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        if path.exists()
        else 0
    )


# --- the console, driven -------------------------------------------------------------------------
def console_session(run: Run, gguf: Path, db: Path, windows: list[dict]) -> str:
    """Stories grown through the bot core on the local engine, by the panel's writers (demo/panel.py):
    an opening, /continue, a rating, /regenerate, a rating, then a take chosen, the passage rewritten
    or erased (and asked for again), as the panel's fixed conduct says (panel.act, panel.retry)."""
    step = timed(
        run,
        "the panel's writers through the bot core (console, local engine)",
        f"story-bot console --gguf {gguf} --db {db}",
    )
    started = time.monotonic()
    transcript, actions = asyncio.run(_session(gguf, db, windows, run.sizes))
    run.actions = actions
    step.seconds = time.monotonic() - started
    console.print(transcript)
    console.print(f"the writers' actions: {dict(actions)}")
    return transcript


async def _session(gguf: Path, db: Path, windows: list[dict], s: Sizes) -> tuple[str, Counter]:
    from bot.core.service import Limits, StoryService
    from bot.local import LlamaCppBackend
    from bot.store import Store

    class Capped(LlamaCppBackend):  # the demo's budget per passage, whatever length the context asks
        def generate(self, model, request, options):
            return super().generate(model, request, {**options, "num_predict": s.num_predict})

    store, backend = Store(db), Capped(gguf, n_ctx=2048)
    service = StoryService(store, backend, lambda channel: "writer", limits=Limits())  # unseeded: takes vary
    try:
        return await writers_session(service, windows, s.asked_words)
    finally:
        await service.aclose()
        await backend.close()
        store.close()


async def writers_session(service, windows: list[dict], asked: int) -> tuple[str, Counter]:
    """The panel's writers at the bot's console on `service`, a story per window: the transcript and
    the actions they took."""
    from bot.console import Console as BotConsole
    from bot.core.story import Member

    out = io.StringIO()
    bot = BotConsole(service, out, Member("console:demo", "demo writer"))

    async def say(line: str, may_fail: bool = False) -> bool:
        """Type a line; False when the bot answered with an error (only the model's turns may)."""
        before = len(out.getvalue())
        out.write(f"> {line}\n")
        await bot.handle(line)
        failed = "\n! " in out.getvalue()[before:]
        if failed and not may_fail:
            raise DemoError(f"the console refused {line[:60]!r}:\n{out.getvalue()[before:]}")
        return not failed

    actions: Counter = Counter()
    for n, window in enumerate(windows):
        first = opening(window)
        for line in ([] if n == 0 else ["/new"]) + [first]:
            await say(line)
        actions.update(await _story(say, service, first, window["continuation"], asked))
    return out.getvalue(), actions


async def _story(say, service, first: str, human: str, asked: int) -> Counter:
    """Two takes of the next passage, each rated, then the panel's action on them (panel.act). A take
    the model failed to write (the bot said why) is disliked and leaves nothing to act on."""
    actions: Counter = Counter()
    outputs: list[str] = []
    for again in (False, True):
        line = "/regenerate" if again and outputs[0] else f"/continue --length {asked}"
        outputs.append(_shown_output(service) if await say(line, may_fail=True) else "")
        if outputs[-1]:
            await say(f"/rate {'+1' if panel.judge(first, outputs[-1], asked).liked else '-1'}")
            actions["rating"] += 1
    if not all(outputs):
        actions["no second take"] += 1
        return actions
    act = panel.act(first, (outputs[0], outputs[1]), human, asked)
    await _carry_out(say, service, act)
    actions.update(act.actions)
    if act.then == "erase":
        actions.update(await _retry(say, service, first, human, asked))
    return actions


async def _retry(say, service, first: str, human: str, asked: int) -> Counter:
    """After an erasure the writers ask again, up to panel.RETRIES times, until a take they like or
    can fix; each take is rated, then kept, fixed or erased too (panel.retry). A new take takes a new
    position: an erased passage keeps its own, for redo."""
    actions: Counter = Counter()
    for _ in range(panel.RETRIES):
        if not await say(f"/continue --length {asked}", may_fail=True):
            continue  # the model wrote no passage: ask again
        act = panel.retry(first, _shown_output(service), human, asked)
        await say(f"/rate {'+1' if act.ratings[0] else '-1'}")
        await _carry_out(say, service, act)
        actions.update(["rating", *act.actions])
        if act.then != "erase":
            break
    return actions


async def _carry_out(say, service, act: panel.Act) -> None:
    """Type the panel's action on the story's last passage: the take picked, then its edit or erasure."""
    from bot.console import CHANNEL

    position = service.show(CHANNEL).passages[-1].position
    if act.take:
        await say(f"/take {act.take}")
    if act.then == "edit":
        await say(f"/edit {position} {act.text}")
    elif act.then == "erase":
        await say(f"/erase {position}")


def _shown_output(service) -> str:
    """The raw output of the take the story shows now ('' when the model wrote none)."""
    from bot.console import CHANNEL

    last = service.show(CHANNEL).last
    if last is None or not last.by_model:
        return ""
    row = service.store.conn.execute("SELECT output FROM generations WHERE id = ?", (last.generation_id,))
    return row.fetchone()["output"] or ""


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
        *_teacher_section(p("teacher"), run.rows),
        "## Held-out perplexity (eval/perplexity.json)",
        "",
        *_perplexity_section(p("eval", "perplexity.json")),
        *_training_section(p("adapter")),
        "## The console session (bot core on the local engine, story-bot.db)",
        "",
        "```text",
        transcript.rstrip(),
        "```",
        "",
        f"## {', '.join(_compared(run))} against the human reference (eval/compare)",
        "",
        p("eval", "compare", "table.md").read_text(encoding="utf-8"),
        "",
        "Distance of each model to the human reference (|model mean − reference mean|; smaller is closer):",
        "",
        *_distance_table(p("eval", "compare", "summary.json")),
        "![the models against the reference](eval/compare/chart.png)",
        "",
        "## Sample continuations, side by side",
        "",
        *_samples(p("contexts.jsonl"), p("eval", "compare", "outputs.jsonl")),
        "## The panel of simulated writers on held-out contexts (eval/compare/outputs.jsonl)",
        "",
        *_panel_section(run),
        "Training curves: ![SFT loss](adapter/loss.png)"
        + "".join(
            f" ![{m.upper()} loss](adapter-{m}/loss.png)"
            for m in ("dpo", "kto")
            if p(f"adapter-{m}", "loss.png").exists()
        ),
        "",
        "## The same with a 7B on a GPU and Ollama",
        "",
        GPU_COMMANDS,
    ]
    atomic.write_text(p("report.md"), "\n".join(lines) + "\n")
    return p("report.md")


def write_report_json(run: Run, seconds: float) -> Path:
    """report.json beside report.md: the run's figures, for comparing runs by program."""
    from dataclasses import asdict

    p = run.path
    ppl = json.loads(p("eval", "perplexity.json").read_text(encoding="utf-8"))
    log = _failures(p("teacher"))
    rates = panel_rates(run)
    data = {
        "student": run.sizes.student,
        "wall_seconds": round(seconds, 1),
        "sizes": asdict(run.sizes),
        "steps": [asdict(st) | {"seconds": round(st.seconds, 2)} for st in run.steps],
        "rows": run.rows | {"teacher_items_failed": sum(e["status"] == "failed" for e in log)},
        "held_out_perplexity": {
            "base": ppl.get("base", {}).get("answer"),
            "tuned": ppl.get("adapter", {}).get("answer"),
            "tuned_below_base": ppl["adapter"]["answer"]["perplexity"] < ppl["base"]["answer"]["perplexity"]
            if "base" in ppl and "adapter" in ppl
            else None,
            "assistant": {k: ppl[k]["assistant"] for k in ("base", "adapter") if k in ppl},
        },
        "training": {
            n: _training_facts(p(n)) for n in ("adapter", "adapter-dpo", "adapter-kto") if p(n).is_dir()
        },
        "compare": _compare_figures(p("eval", "compare", "summary.json")),
        "panel": {"held_out": rates, "criteria": "demo/panel.py"},
        # The loop: the panel writers' actions -> feedback rows -> DPO or KTO -> the panel's rates above.
        "loop": {
            "actions": dict(sorted(run.actions.items())),
            "feedback": run.feedback,
            "preference_ran": run.preference_skipped is None,
            "preference": run.sizes.preference,
            "preference_above_sft": _above(rates, f"tuned+{run.sizes.preference}", "tuned"),
            "preference_vs_sft": preference_vs_sft(run),
            "preference_trained_on": run.trained_on,
            "preference_skipped_because": run.preference_skipped,
        },
    }
    atomic.write_text(p("report.json"), json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return p("report.json")


def _above(rates: dict[str, dict], model: str, than: str) -> bool | None:
    return rates[model]["rate"] > rates[than]["rate"] if model in rates and than in rates else None


def _precision(s: Sizes) -> str:
    """bf16 mixed precision where the CPU multiplies it natively (the full demo: 710 s in fp32 against
    596 s, SFT 1.16 and DPO 1.3 times faster, 2026-12-07); the quick demo stays fp32, the same on every
    CPU, as the tests run it. On a GPU, train's own choice."""
    from pipeline.train.base import detect_hardware

    hw = detect_hardware()
    return "bf16" if s.student == "smollm2" and hw.device == "cpu" and hw.bf16 else "auto"


def _training_facts(adapter: Path) -> dict:
    """training.json's held-out facts with the step times from log.jsonl."""
    meta = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    keys = (
        "method",
        "global_step",
        "max_steps",
        "stopped_early",
        "early_stopping_patience",
        "best_kept",
        "base_eval_loss",
        "best_eval_loss",
        "best_step",
        "last_eval_loss",
        "worse_than_base",
    )
    facts = {k: meta.get(k) for k in keys}
    entries = [json.loads(x) for x in (adapter / "log.jsonl").read_text(encoding="utf-8").splitlines() if x]
    runtime = next((e["train_runtime"] for e in entries if "train_runtime" in e), None)
    evals = sum(e.get("eval_runtime", 0.0) for e in entries)
    steps = meta.get("global_step") or 0
    facts |= {"train_seconds": runtime, "eval_seconds": round(evals, 2)}
    facts["seconds_per_step"] = round((runtime - evals) / steps, 3) if runtime and steps else None
    return facts


def _compared(run: Run) -> list[str]:
    summary = json.loads(run.path("eval", "compare", "summary.json").read_text(encoding="utf-8"))
    return [m for m in summary["columns"] if m != "reference"]


def _compare_figures(summary: Path) -> dict:
    if not summary.exists():
        return {}
    data = json.loads(summary.read_text(encoding="utf-8"))
    return {"columns": data["columns"], "distance_to_reference": reference_distances(data)}


def _failures(teacher: Path) -> list[dict]:
    log = teacher / "train.failed.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [json.loads(x) for x in lines if x.strip()]


def _teacher_section(teacher: Path, rows: dict[str, dict]) -> list[str]:
    from collections import Counter

    from pipeline.data.teacher import reason_kind

    log = _failures(teacher)
    reasons = Counter(reason_kind(t["reason"]) for e in log for t in e.get("tries", []))
    lines = [
        f"{_rows(teacher / 'train.jsonl')} train rows and {_rows(teacher / 'val.jsonl')} validation "
        f"rows accepted; {sum(e['status'] == 'failed' for e in log)} items failed every try "
        "(teacher/train.failed.jsonl keeps each try's reply and reason). SmolLM2-135M is too slow "
        "and too weak a teacher to write more than a dozen rows here, so the rows trained on are "
        "mostly the other windows with a short derived reasoning (demo/rows.py): "
        + ", ".join(f"{f}: {r['teacher']} from the teacher, {r['derived']} derived" for f, r in rows.items())
        + ".",
        "",
    ]
    lines += _reasoning_samples(teacher, log)
    if reasons:
        lines += ["| rejected tries | reason |", "| ---: | --- |"]
        lines += [f"| {n} | {r} |" for r, n in reasons.most_common()]
        lines.append("")
    return lines


def _reasoning_samples(teacher: Path, log: list[dict]) -> list[str]:
    """The teacher's reasoning as it is, kept and refused, beside a derived one, so a reader can judge."""

    cells = {}
    for path in (teacher / "train.jsonl", teacher / "val.jsonl"):
        if path.exists() and _rows(path):
            row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
            cells["a teacher reasoning kept"] = prompt.parse_output(row["messages"][1]["content"]).reasoning
            break
    tries = [t for e in log for t in e.get("tries", []) if t.get("reply")]
    if tries:
        cells[f"a teacher reply refused ({tries[0]['reason'][:80]})"] = tries[0]["reply"]
    data = teacher.parent / "data" / "train.jsonl"
    if data.exists() and _rows(data):
        last = json.loads(data.read_text(encoding="utf-8").splitlines()[-1])
        cells["a derived reasoning"] = prompt.parse_output(last["messages"][1]["content"]).reasoning
    if not cells:
        return []
    return [
        "| " + " | ".join(cells) + " |",
        "|" + " --- |" * len(cells),
        "| " + " | ".join(_cell(t) for t in cells.values()) + " |",
        "",
    ]


def _training_section(adapter: Path) -> list[str]:
    meta = json.loads((adapter / "training.json").read_text(encoding="utf-8"))
    if meta.get("base_eval_loss") is None:
        return []
    verdict = "**worse than the base**" if meta["worse_than_base"] else "better than the base"
    return [
        f"SFT held-out loss (adapter/training.json): base {meta['base_eval_loss']:.4f}, best "
        f"{meta['best_eval_loss']:.4f} at step {meta['best_step']} of {meta['global_step']} "
        f"({'stopped early' if meta['stopped_early'] else 'no early stop'}; the adapter kept is the "
        f"best one): {verdict}.",
        "",
    ]


def _distance_table(summary: Path) -> list[str]:
    distances = reference_distances(json.loads(summary.read_text(encoding="utf-8")))
    if not distances:
        return ["(no reference column)", ""]
    models = list(next(iter(distances.values()))["distance"])
    lines = ["| Metric | reference | " + " | ".join(models) + " |", "| --- |" + " ---: |" * (len(models) + 1)]
    for label, d in distances.items():
        cells = [f"{d['reference']:.2f}"] + [_figure(d["distance"][m]) for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def reference_distances(summary: dict) -> dict[str, dict]:
    """Per metric of the comparison: the human reference's mean and each model's distance to it."""
    from pipeline.evaluate.report import ROWS

    columns = summary["columns"]
    ref = columns.get("reference", {}).get("metrics", {})
    out = {}
    for row in ROWS:
        r = (ref.get(row.key) or {}).get("mean")
        if r is None:
            continue
        means = {m: (c.get("metrics", {}).get(row.key) or {}).get("mean") for m, c in columns.items()}
        out[row.label.format(window=summary["settings"].get("window", ""))] = {
            "key": row.key,
            "reference": r,
            # None where a model had no text to score on this metric (a random student's may not)
            "distance": {m: None if v is None else abs(v - r) for m, v in means.items() if m != "reference"},
        }
    return out


def panel_verdicts(run: Run) -> dict[str, dict[tuple[int, int], panel.Verdict]]:
    """The panel's verdict on every held-out output of a comparison, per model and (context, sample)."""
    ctxs = [json.loads(x) for x in run.path("contexts.jsonl").read_text(encoding="utf-8").splitlines() if x]
    outs = run.path("eval", "compare", "outputs.jsonl").read_text(encoding="utf-8").splitlines()
    verdicts: dict[str, dict[tuple[int, int], panel.Verdict]] = {}
    for o in (json.loads(x) for x in outs if x.strip()):
        context = ctxs[o["context_index"]]["context"]
        verdict = panel.judge(context, o["output"], run.sizes.asked_words)
        verdicts.setdefault(o["model"], {})[(o["context_index"], o["sample"])] = verdict
    return verdicts


def panel_rates(run: Run) -> dict[str, dict]:
    return {model: panel.rate(list(v.values())) for model, v in panel_verdicts(run).items()}


def preference_vs_sft(run: Run) -> dict | None:
    """The preference model against the SFT model, output slot by output slot (panel.paired)."""
    verdicts = panel_verdicts(run)
    tuned = verdicts.get(f"tuned+{run.sizes.preference}")
    return panel.paired(tuned, verdicts["tuned"]) if tuned and "tuned" in verdicts else None


def _panel_section(run: Run) -> list[str]:
    rates, asked = panel_rates(run), run.sizes.asked_words
    lines = [
        f"A writer of the panel likes a passage in the trained format, of {asked // 2} to {asked * 2} "
        f"words (asked: about {asked}), naming a character of the context (demo/panel.py). Rates "
        f"over {run.sizes.eval_contexts} held-out contexts × {run.sizes.samples} samples, with 95% "
        "Wilson intervals:",
        "",
        "| model | liked | rate | 95% interval | in format | near length | names a character |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for model, r in rates.items():
        lines.append(
            f"| {model} | {r['liked']}/{r['n']} | {r['rate']:.2f} | {r['ci95'][0]:.2f}–"
            f"{r['ci95'][1]:.2f} | {r['in_format']:.2f} | {r['near_length']:.2f} | "
            f"{r['names_a_character']:.2f} |"
        )
    lines += [
        "",
        f"In the console the writers' actions were {_counted(run.actions)}; the feedback export "
        f"made {_counted(run.feedback.get('by_action', {}))} of them (feedback/preference.jsonl).",
    ]
    if run.preference_skipped:
        lines += ["", f"The preference step did not run: {run.preference_skipped}"]
    if vs := preference_vs_sft(run):
        method = run.sizes.preference.upper()
        lines += [
            "",
            f"{method} against SFT on the same {vs['slots']} output slots (context, sample): the panel "
            f"liked {method}'s output where it did not like SFT's {_times(vs['wins'])}, the reverse "
            f"{_times(vs['losses'])} (exact one-sided sign test: p = {vs['p_one_sided']:.3f}). The "
            f"{method} step trained on {_counted(run.trained_on)}.",
        ]
    return [*lines, ""]


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _counted(counts: dict) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"


def _perplexity_section(path: Path) -> list[str]:
    r = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| model | answer loss | answer perplexity | answer tokens |", "| --- | ---: | ---: | ---: |"]
    for name in ("base", "adapter"):
        if name in r:
            a = r[name]["answer"]
            lines.append(f"| {name} | {a['loss']:.4f} | {a['perplexity']:.3f} | {a['tokens']} |")
    return [*lines, ""]


def _samples(contexts: Path, outputs: Path, n: int = 2) -> list[str]:

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
