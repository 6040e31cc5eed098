"""One training run, whatever the method: check the hardware and the base, read the rows, build the
TRL trainer, train (or resume), and write the adapter with its log, curve and metadata.

Runs unchanged as one process or under `torchrun` / `accelerate launch`: the Trainer handles the
processes; only rank 0 prints and writes the output folder's files.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.train import base, outputs, packing, tracking
from pipeline.train.callbacks import GracefulStop, LossLog, SampleLog, sample_prompts
from pipeline.train.options import TrainError, TrainOptions, is_main_process, trainer_arguments
from plumbing.atomic import check_output

if TYPE_CHECKING:
    from transformers import Trainer


@dataclass
class TrainResult:
    out_dir: Path
    status: str  # "done", or "stopped" by Ctrl-C (adapter so far written, checkpoint saved for --resume)
    global_step: int
    metadata: outputs.TrainMetadata
    trainer: Trainer | None = field(repr=False, default=None)

    @property
    def model(self):
        assert self.trainer is not None, "the result of a run that built no trainer"
        return self.trainer.model


def say(message: str, printer: Callable[[str], None] = print) -> None:
    if is_main_process():
        printer(message)


def train(
    opts: TrainOptions, callbacks: Sequence = (), printer: Callable[[str], None] = print
) -> TrainResult:
    """Train as opts say; progress and problems go to printer (rank 0 only). Raises TrainError."""
    check_output(opts.out_dir, folder=True)
    tracking.check(opts.report_to)
    hw = base.detect_hardware()
    precision = base.choose_precision(opts.precision, hw)
    if opts.qlora:
        base.check_qlora(hw.device)
    base.check_source(opts.base)
    tokenizer, fmt = base.load_tokenizer(base.tokenizer_source(opts), opts.chat_template, target=opts.target)
    opts = replace(opts, target_modules=base.check_target_modules(opts))
    created = not opts.out_dir.exists()
    resume_from = outputs.prepare(opts.out_dir, opts.resume, opts.overwrite)
    try:
        with tracking.environment(opts):
            result = _train(opts, hw, precision, tokenizer, fmt, resume_from, callbacks, printer)
    except BaseException:
        # A failed run leaves nothing that looks like a result; resumable checkpoints stay.
        if is_main_process():
            outputs.discard_failed_run(opts.out_dir, created)
        raise
    _leave_process_group()
    return result


def _leave_process_group() -> None:
    """Under torchrun, after a good run, close the process group the Trainer opened: left to interpreter
    exit, gloo's threads can abort a process ("terminate called without an active exception"). The
    barrier first: rank 0 is still writing the outputs, and destroying the group alone can hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 writes the outputs meanwhile: leave together
        dist.destroy_process_group()


def _train(opts, hw, precision, tokenizer, fmt, resume_from, callbacks, printer) -> TrainResult:
    from transformers import EarlyStoppingCallback, set_seed

    kind = "QLoRA 4-bit NF4" if opts.qlora else "LoRA"
    head = f"{opts.method.upper()} ({opts.target}) on {hw.name}, {precision}, {kind}"
    say(f"{head}, {fmt.family} chat template (pinned to {fmt.date})", printer)

    method = _method_module(opts.method)
    train_rows, eval_rows, stats = method.load_data(opts, tokenizer)
    for s in stats.values():
        say(s.summary(), printer)

    model = base.load_model(opts, precision, hw)
    base.score_labelled_positions_only()
    set_seed(opts.seed)  # the new adapter's random init is part of a reproducible run
    model = base.with_adapter(model, opts.adapter) if opts.adapter else base.with_new_adapter(model, opts)
    exact = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opts, packed = _check_packing(opts, model, train_rows, printer)

    log = LossLog(opts.out_dir, title=f"{opts.method.upper()} {Path(opts.base).name}")
    stop = GracefulStop(lambda m: say(m, printer))
    extra = [*callbacks, log, stop, *_sample_log(opts, eval_rows, tokenizer)]
    if opts.patience and eval_rows is not None:
        extra.append(EarlyStoppingCallback(opts.patience, opts.early_stopping_threshold))
    args = trainer_arguments(opts, precision, hw.device, eval_rows is not None)
    trainer = method.build_trainer(opts, model, tokenizer, train_rows, eval_rows, args, extra)
    if precision != "bf16":
        _restore(trainer.model, exact)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)", printer)

    metadata: outputs.TrainMetadata = {
        "method": opts.method,
        "target": opts.target,  # what the model writes; chat_template carries it to serving too
        "base": opts.base,
        "chat_template": fmt.record(),  # the template, its tokens and pins, for export and Modelfile
        "qlora": opts.qlora,
        "precision": precision,
        "device": hw.name,
        "processes": trainer.args.world_size,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "rows": {k: s.as_dict() for k, s in stats.items()},
        "packing": packed,
        "options": opts.as_dict(),
        "resumed_from_step": _step(resume_from),
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if is_main_process():
        outputs.write_metadata(opts.out_dir, metadata)
    if resume_from:
        say(f"resuming from {resume_from.name}", printer)
    _fit(trainer, opts, resume_from, stop)

    state = trainer.state
    status = "stopped" if stop.requested else "done"
    metadata |= {
        "status": status,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "stopped_early": status == "done" and state.global_step < state.max_steps,
        "early_stopping_patience": opts.patience if eval_rows is not None else 0,
        "best_kept": bool(trainer.args.load_best_model_at_end and state.best_model_checkpoint),
        **held_out(state.log_history, state.best_metric, state.best_global_step),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if is_main_process():
        _write(trainer.model, tokenizer, opts, metadata)
        log.draw()
    say(f"adapter written to {opts.out_dir} (log.jsonl, loss.png, training.json beside it)", printer)
    if status == "stopped":
        say(f"stopped by Ctrl-C at step {state.global_step}: {_resume_hint(opts)}", printer)
    if (verdict := held_out_verdict(metadata)) is not None:
        say(verdict, printer)  # the last line: whether training helped on the held-out rows
    return TrainResult(opts.out_dir, status, state.global_step, metadata, trainer)


def _sample_log(opts: TrainOptions, eval_rows: list[dict] | None, tokenizer) -> list[SampleLog]:
    """The sample generations at evaluations, where asked for and possible (SFT held-out rows)."""
    if opts.method != "sft" or not eval_rows or not opts.sample_contexts:
        return []
    tensorboard = tracking.tensorboard_dir(opts.out_dir) if opts.report_to == "tensorboard" else None
    prompts = sample_prompts(eval_rows, opts.sample_contexts)
    return [SampleLog(opts.out_dir, prompts, tokenizer, opts.sample_tokens, opts.sample_every, tensorboard)]


def _check_packing(opts: TrainOptions, model, train_rows, printer) -> tuple[TrainOptions, dict]:
    """Pack only where the model's attention keeps packed rows apart (`packing.probe`); else train
    unpacked, say so by the attention's name, and record it (the effective options say it too)."""
    if opts.method != "sft" or not opts.packing:
        return opts, {"used": False}
    check = packing.probe(model, packing.probe_rows(train_rows))
    if not check.isolated:
        say(check.refusal(), printer)
        opts = replace(opts, packing=False)
    return opts, check.record(opts.packing)


def held_out(log_history: list[dict], best: float | None, best_step: int | None) -> outputs.HeldOut:
    """The held-out facts of a run for training.json. The evaluation at step 0 (before any update) is
    the loss of the model the run starts from: the base for SFT, the SFT adapter for DPO and KTO. The
    Trainer's best excludes it, so `worse_than_base` says whether any trained step beat the start."""
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    start = next((loss for step, loss in evals if step == 0), None)
    return {
        "base_eval_loss": start,
        "best_eval_loss": best,
        "best_step": best_step,
        "last_eval_loss": evals[-1][1] if evals else None,
        "worse_than_base": None if start is None or best is None else best > start,
    }


def held_out_verdict(metadata: outputs.TrainMetadata) -> str | None:
    start, best, step = (metadata.get(k) for k in ("base_eval_loss", "best_eval_loss", "best_step"))
    if start is None or best is None:
        return None
    what = "the base" if metadata.get("method") == "sft" else "the starting adapter"
    if metadata["worse_than_base"]:
        return (
            f"WORSE THAN THE BASE: the best held-out loss {best:.4f} (step {step}) is above {what}'s "
            f"{start:.4f}: this adapter makes the model worse on the held-out rows (fewer steps, a lower "
            "--lr or more rows may help)"
        )
    kept = "the adapter written" if metadata.get("best_kept") else "the last adapter is written"
    return f"held-out loss: {what} {start:.4f}, best {best:.4f} at step {step} ({kept})"


def _fit(trainer, opts: TrainOptions, resume_from: Path | None, stop: GracefulStop) -> None:
    """trainer.train, with a hard interrupt or a full disk turned into a message on how to go on."""
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt as exc:
        raise TrainError(f"interrupted at step {trainer.state.global_step}; {_resume_hint(opts)}") from exc
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        removed = outputs.remove_incomplete_checkpoints(opts.out_dir)
        note = f" (removed the partial {', '.join(p.name for p in removed)})" if removed else ""
        raise TrainError(f"the disk is full{note}: free some space, then {_resume_hint(opts)}") from e
    finally:
        stop.restore()


def _write(model, tokenizer, opts: TrainOptions, metadata: outputs.TrainMetadata) -> None:
    try:
        outputs.save_adapter(model, tokenizer, opts.out_dir, opts.base)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            hint = _resume_hint(opts)
            raise TrainError(f"the disk filled up while writing the adapter: free space, then {hint}") from e
        raise
    outputs.write_metadata(opts.out_dir, metadata)


def _method_module(method: str):
    from pipeline.train import preference, sft

    return sft if method == "sft" else preference


def _restore(model, exact: dict) -> None:
    """TRL rounds QLoRA adapters to bf16 (the QLoRA paper's choice on bf16 GPUs). Without bf16 mixed
    precision, small updates would vanish in bf16 rounding and fp16's gradient scaler refuses
    half-precision weights, so the trainable weights go back to their exact fp32 values (which also
    keeps them equal to DPO/KTO's frozen reference copy)."""
    for name, p in model.named_parameters():
        if name in exact:
            p.data = exact[name].to(p.device)


def _step(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None


def _resume_hint(opts: TrainOptions) -> str:
    last = outputs.last_complete_checkpoint(opts.out_dir)
    if last is None:
        return "no checkpoint was saved yet, so run the same command again to start over"
    return f"run the same command with --resume to continue from {last.name}"
