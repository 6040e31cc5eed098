"""Packed rows stay apart: TRL's best-fit packing on each attention implementation we train with
(eager and SDPA, on the installed transformers), checked logit for logit against each row alone; the
loss of a pack never crosses a row boundary; an attention that lets packed rows see each other turns
packing off for the run, by name, and training.json says so."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.tiny import tiny_config
from pipeline.train import packing

VOCAB = 300
LENGTHS = (7, 12, 5, 9, 3, 11)


def _model(attn: str, arch: str = "qwen2"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(arch, VOCAB, initializer_range=0.3)  # larger weights: rows that leak differ a lot
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32).eval()


def _rows() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in LENGTHS]


def _packs(rows: list[list[int]], max_length: int = 24) -> list[dict]:
    """The rows as SFTTrainer packs them (bfd) and its padding-free collator batches each pack."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    packed = pack_dataset(Dataset.from_list([{"input_ids": r, "labels": r} for r in rows]), max_length, "bfd")
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    return [collator([example]) for example in packed]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_each_packed_row_has_the_logits_and_loss_it_has_alone(attn, arch):
    model, rows = _model(attn, arch), _rows()
    assert model.config._attn_implementation == attn
    alone = {tuple(r): model(input_ids=torch.tensor([r])).logits[0] for r in rows}
    seen, loss_sum, loss_tokens, packed_loss_sum = 0, 0.0, 0, 0.0
    for batch in _packs(rows):
        ids, positions = batch["input_ids"][0], batch["position_ids"][0]
        assert "attention_mask" not in batch  # only the restarting position ids mark the rows
        starts = (positions == 0).nonzero().flatten().tolist() + [len(ids)]
        assert len(starts) > 2  # at least two rows in this pack
        # As TRL's compute_loss calls the model: with a KV cache, transformers skips finding packed rows.
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        for a, b in zip(starts, starts[1:], strict=False):
            row = tuple(ids[a:b].tolist())
            assert positions[a:b].tolist() == list(range(b - a))  # position ids restart at each row
            torch.testing.assert_close(logits[a:b], alone[row], atol=1e-4, rtol=1e-4)
            seen += 1
            # The row's own loss alone: each token predicted from the ones before it in the row.
            loss_sum += torch.nn.functional.cross_entropy(
                alone[row][:-1], torch.tensor(row[1:]), reduction="sum"
            ).item()
            loss_tokens += len(row) - 1
        # The collator labels each row's first token -100: no row is trained to predict the next one's start.
        assert (batch["labels"][0][starts[:-1]] == -100).all()
        assert (batch["labels"][0] != -100).sum().item() == len(ids) - (len(starts) - 1)
        out = model(**batch, use_cache=False)
        packed_loss_sum += out.loss.item() * ((batch["labels"][0] != -100).sum().item())
    assert seen == len(rows)
    assert packed_loss_sum / loss_tokens == pytest.approx(loss_sum / loss_tokens, rel=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_the_probe_keeps_packing_where_rows_stay_apart(attn):
    check = packing.probe(_model(attn), _rows()[:2])
    assert check.attention == attn and check.isolated
    assert check.packed_diff < 1e-4 and check.leak_diff > 0.1
    assert check.record(True) == {
        "used": True,
        "attention": attn,
        "isolated": True,
        "max_logit_difference": check.packed_diff,
        "leak_logit_difference": check.leak_diff,
    }


@pytest.fixture
def leaky_attention():
    """An attention that ignores the boundaries, as a kernel unaware of packing does: plain causal
    attention over the whole packed sequence (a custom attention gets no mask from transformers)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def leaky(module, query, key, value, attention_mask, **kwargs):
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)

    AttentionInterface.register("leaky_causal", leaky)
    yield "leaky_causal"


def test_the_probe_finds_a_leaking_attention(leaky_attention):
    check = packing.probe(_model(leaky_attention), _rows()[:2])
    assert not check.isolated and check.packed_diff > 0.1
    assert "'leaky_causal'" in check.refusal() and "packing turned off" in check.refusal()


def test_a_run_on_a_leaking_attention_trains_unpacked_and_says_so(
    train_base, tiny_texts, tmp_path, leaky_attention, monkeypatch
):
    from pipeline.train import base
    from pipeline.train.options import TrainOptions
    from pipeline.train.run import train
    from tests.train.helpers import sft_rows, write_jsonl

    load = base.load_model

    def load_leaky(*args, **kwargs):
        model = load(*args, **kwargs)
        model.set_attn_implementation(leaky_attention)
        return model

    monkeypatch.setattr(base, "load_model", load_leaky)
    data = write_jsonl(tmp_path / "rows.jsonl", sft_rows(tiny_texts, 8))
    said: list[str] = []
    opts = TrainOptions(
        base=str(train_base),
        out_dir=tmp_path / "out",
        data=data,
        qlora=False,
        max_length=320,
        max_steps=1,
        batch_size=2,
        grad_accum=1,
        gradient_checkpointing=False,
    )
    result = train(opts, printer=said.append)
    assert any("packing turned off" in line and "leaky_causal" in line for line in said)
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["packing"]["used"] is False and meta["packing"]["attention"] == "leaky_causal"
    assert meta["options"]["packing"] is False  # the effective options: repeating the run repeats this
    assert result.trainer.args.packing is False


def test_a_run_on_sdpa_packs_and_records_the_check(train_base, tiny_texts, tmp_path):
    from pipeline.train.options import TrainOptions
    from pipeline.train.run import train
    from tests.train.helpers import sft_rows, write_jsonl

    data = write_jsonl(tmp_path / "rows.jsonl", sft_rows(tiny_texts, 8))
    opts = TrainOptions(
        base=str(train_base),
        out_dir=tmp_path / "out",
        data=data,
        qlora=False,
        max_length=320,
        max_steps=1,
        batch_size=2,
        grad_accum=1,
        gradient_checkpointing=False,
    )
    result = train(opts, printer=lambda _: None)
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["packing"]["used"] is True and meta["packing"]["isolated"] is True
    assert meta["packing"]["attention"] == "sdpa" and result.trainer.args.packing is True
    # The trainer's own path: a batch of its dataloader through its compute_loss, row by row.
    trainer = result.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.shape[0]]
    assert len(starts) > 2 and "attention_mask" not in batch
    trainer.model.eval()
    with torch.no_grad():
        _, out = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
        for a, b in zip(starts, starts[1:], strict=False):
            alone = trainer.model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(out.logits[0, a:b], alone, atol=1e-4, rtol=1e-4)
