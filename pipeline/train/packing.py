"""Whether packed rows stay apart: a probe of the model's own attention before packing is trusted.

TRL's best-fit packing (`packing_strategy="bfd"`) concatenates rows into one sequence with no padding and
no attention mask; `position_ids` restart at 0 at each row (TRL's padding-free collator), and nothing
else marks the boundaries. Flash-attention kernels read them from `cu_seq_lens`; eager and SDPA rely on
transformers' masking_utils, which finds the rows where the position ids restart
(`find_packed_sequence_indices`) and masks across them, but only when the forward pass builds no KV
cache: with `use_cache` on (a model config's default) the rows of a pack see each other. TRL's
`compute_loss` passes `use_cache=False` and the Trainer sets the config's to its own (False), so
training is isolated, and the probe runs as training does. An attention implementation that does neither
lets each story attend to the stories packed before it, silently: the loss still falls.

So before training, the probe runs two short rows of the run's own data through the model as TRL packs
them, alone, and as one unmasked sequence (what a leak looks like). Packing is kept where a row's logits
inside the pack match its logits alone far more closely than a leak would; otherwise it is turned off
for this run, by the attention implementation's name, and training.json records what was done.
The loss cannot cross rows either: the collator labels each row's first token -100, so the last token
of one story is never trained to predict the next story's start (`tests/train/test_packing.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Probe rows are cut to this many tokens: enough to show a leak, cheap on any model.
PROBE_TOKENS = 16
#: A row inside the pack may differ from itself alone by at most this share of what a leak changes
#: (bf16 kernels differ by rounding between shapes; a leak changes the logits as much as a new context).
ISOLATION_RATIO = 0.1


@dataclass(frozen=True)
class PackingCheck:
    attention: str  # the model's attention implementation (eager, sdpa, flash_attention_2, ...)
    packed_diff: float  # largest |logit difference| of a row inside the pack against the row alone
    leak_diff: float  # the same for the rows run as one sequence, unmasked: what a leak looks like

    @property
    def isolated(self) -> bool:
        return self.packed_diff <= max(1e-5, ISOLATION_RATIO * self.leak_diff)

    def record(self, used: bool) -> dict:
        return {
            "used": used,
            "attention": self.attention,
            "isolated": self.isolated,
            "max_logit_difference": self.packed_diff,
            "leak_logit_difference": self.leak_diff,
        }

    def refusal(self) -> str:
        return (
            f"packing turned off: with the {self.attention!r} attention implementation, rows packed "
            f"together attend to each other (a row's logits move by {self.packed_diff:.3g} inside a pack; "
            f"a leak moves them by {self.leak_diff:.3g}), so this run batches rows by length instead; "
            "load the model with eager, sdpa or flash_attention_2 attention to pack"
        )


def attention_of(model) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "unknown")


def packed_batch(rows: list[list[int]], pad_token_id: int = 0) -> dict:
    """The rows as TRL's padding-free collator hands one packed sequence to the model."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    joined = [t for r in rows for t in r]
    example = {"input_ids": joined, "labels": joined, "seq_lengths": [len(r) for r in rows]}
    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)([example])


def probe(model, rows: list[list[int]]) -> PackingCheck:
    """Run the rows packed, alone and leaked through the model (eval mode, no gradients)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in packed_batch(rows).items()}
            batch.pop("labels")
            packed = model(**batch, use_cache=False).logits[0].float()  # as TRL's compute_loss calls it
            ids = batch["input_ids"]
            positions = torch.arange(ids.shape[1], device=device)[None]
            leaked_logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
            packed_diff = leak_diff = 0.0
            start = 0
            for row in rows:
                alone = model(input_ids=torch.tensor([row], device=device), use_cache=False).logits[0].float()
                end = start + len(row)
                packed_diff = max(packed_diff, (packed[start:end] - alone).abs().max().item())
                leak_diff = max(leak_diff, (leaked_logits[start:end] - alone).abs().max().item())
                start = end
    finally:
        model.train(was_training)
    return PackingCheck(attention_of(model), packed_diff, leak_diff)


def probe_rows(train_rows: list[dict]) -> list[list[int]]:
    """Two short rows of the run's own data (the first and the last; one row twice leaks as well)."""
    return [r["input_ids"][:PROBE_TOKENS] for r in (train_rows[0], train_rows[-1])]
