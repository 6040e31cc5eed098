"""Trainer callbacks: the JSONL loss log and its PNG curve, sample continuations of held-out contexts
at evaluations, and a graceful stop on Ctrl-C."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from contract import chat_template, prompt
from pipeline import plots
from plumbing import jsonl


def read_log(path: Path) -> list[dict]:
    return [entry for _, entry in jsonl.iter_objects(path)] if Path(path).is_file() else []


def plot_losses(entries: list[dict], png: Path, title: str = "") -> None:
    """Train and eval loss against the optimizer step, as a PNG."""
    plt = plots.pyplot()

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label, style in (("loss", "train", "-"), ("eval_loss", "eval", "o-")):
        points = [(e["step"], e[key]) for e in entries if isinstance(e.get(key), int | float)]
        if points:  # a single point draws no line: give it a marker so it shows
            ax.plot(
                *zip(*points, strict=True),
                style if len(points) > 1 else "o",
                label=label,
                markersize=3 if len(points) > 1 else 6,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    plots.save_png(fig, png)


class LossLog(TrainerCallback):
    """One JSON line per Trainer log (train loss, eval loss, learning rate, DPO/KTO rewards...) and
    the curve redrawn after each evaluation and at the end. On resume, lines from steps after the
    checkpoint (work that was lost) are dropped, so the log tells the history of the adapter."""

    def __init__(self, out_dir: Path, title: str = "") -> None:
        self.log = Path(out_dir) / "log.jsonl"
        self.png = Path(out_dir) / "loss.png"
        self.title = title
        self.entries: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            resumed = state.global_step > 0  # a fresh run starts a fresh log
            self.entries = [e for e in read_log(self.log) if resumed and e["step"] <= state.global_step]
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        entry |= {k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
        self.entries.append(entry)
        self._write()
        if "eval_loss" in logs:
            self.draw()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.draw()

    def draw(self) -> None:
        plot_losses(self.entries, self.png, self.title)

    def _write(self) -> None:
        jsonl.write(self.log, self.entries)


def sample_prompts(rows: list[dict], n: int) -> list[list[int]]:
    """The prompt tokens of the first n encoded SFT rows (those labelled -100): the exact tokens the
    model is trained and served to write after."""
    prompts = []
    for row in rows[:n]:
        labels = row["labels"]
        start = next((i for i, label in enumerate(labels) if label != -100), len(labels))
        prompts.append(list(row["input_ids"][:start]))
    return prompts


def stop_token_ids(tokenizer) -> list[int]:
    """The ids of the chat template's stops (end of turn, EOS) that are single tokens."""
    chat = chat_template.of_tokenizer(tokenizer)
    stops = chat.stops if chat is not None else (tokenizer.eos_token or "",)
    ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in stops if s]
    return [one[0] for one in ids if len(one) == 1]


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[tuple[str, bool]]:
    """Greedy continuations of each prompt by the model as it is, each with whether max_new_tokens cut
    it before a stop token. Eval mode (no dropout, no gradient checkpointing), no gradients, the KV
    cache on and no random draws, so training goes on from the same state; its train mode is restored."""
    import torch
    from transformers import GenerationConfig

    stops = stop_token_ids(tokenizer)
    config = GenerationConfig(  # not the base's: its sampling settings would be ignored with warnings
        max_new_tokens=max_new_tokens,
        do_sample=False,
        use_cache=True,
        eos_token_id=stops or None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [0])[0],
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts = []
    try:
        with torch.no_grad():
            for ids in prompts:
                input_ids = torch.tensor([ids], device=device)
                out = model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config
                )
                new = out[0, len(ids) :].tolist()
                cut = len(new) >= max_new_tokens and not (new and new[-1] in stops)
                texts.append((tokenizer.decode(new, skip_special_tokens=True), cut))
    finally:
        model.train(was_training)
    return texts


def sample_record(step: int, context: int, text: str, cut: bool = False) -> dict:
    """One line of samples.jsonl; `cut`: the token budget ended it (its unclosed tags are no fault)."""
    parsed = prompt.parse_output(text)
    issues = [str(i) for i in parsed.issues]
    return {
        "step": step,
        "context": context,
        "text": text,
        "cut": cut,
        "format_ok": parsed.ok,
        "issues": issues,
    }


class SampleLog(TrainerCallback):
    """Every `every` evaluations (the first included), the model continues a few fixed held-out
    contexts greedily: one line each in samples.jsonl (step, context, text, whether it parses as
    <reasoning>/<answer>), and with TensorBoard the texts and the format rate beside the loss.
    A story model's collapse (lost tags, loops) shows in its outputs before its loss. On resume,
    lines from steps after the checkpoint are dropped, as in the loss log."""

    def __init__(
        self,
        out_dir: Path,
        prompts: list[list[int]],
        tokenizer,
        max_new_tokens: int,
        every: int = 1,
        tensorboard: Path | None = None,
    ) -> None:
        self.path = Path(out_dir) / "samples.jsonl"
        self.prompts, self.tokenizer = prompts, tokenizer
        self.max_new_tokens, self.every = max_new_tokens, every
        self.tensorboard = tensorboard
        self.records: list[dict] = []
        self._writer: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            resumed = state.global_step > 0
            self.records = [r for r in read_log(self.path) if resumed and r["step"] <= state.global_step]
            jsonl.write(self.path, self.records)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        evaluations = sum("eval_loss" in h for h in state.log_history)  # this one is logged already
        if not state.is_world_process_zero or model is None or not self.prompts:
            return
        if evaluations == 0 or (evaluations - 1) % self.every:
            return
        texts = generate(model, self.tokenizer, self.prompts, self.max_new_tokens)
        records = [sample_record(state.global_step, i, t, cut) for i, (t, cut) in enumerate(texts)]
        self.records.extend(records)
        jsonl.write(self.path, self.records)
        if self.tensorboard is not None:
            self._to_tensorboard(state.global_step, records)

    def _to_tensorboard(self, step: int, records: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(log_dir=str(self.tensorboard))
        for r in records:  # a code block: TensorBoard renders Markdown and would hide the tags
            verdict = "parses" if r["format_ok"] else "off format: " + ", ".join(r["issues"])
            verdict += " (cut by --sample-tokens)" if r["cut"] else ""
            self._writer.add_text(
                f"samples/context_{r['context']}", f"```\n{r['text']}\n```\n\n{verdict}", step
            )
        rate = sum(r["format_ok"] for r in records) / len(records)
        self._writer.add_scalar("samples/format_rate", rate, step)
        self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class GracefulStop(TrainerCallback):
    """The first Ctrl-C ends training after the current step with a checkpoint saved; a second one
    interrupts at once. Installed only in the main thread of a single process (under torchrun every
    rank would stop at a different step)."""

    def __init__(self, announce=print) -> None:
        self.requested = False
        self.announce = announce
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.announce("stopping after this step and saving a checkpoint (Ctrl-C again to stop now)")

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
