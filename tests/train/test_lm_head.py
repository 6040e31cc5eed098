"""TRL's fused LM head scoring only the labelled positions on a CPU (base.score_labelled_positions_only)."""

from __future__ import annotations

import pytest


def test_scoring_only_the_labelled_positions_keeps_the_loss_and_gradients(train_base, monkeypatch):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM
    from trl.kernels import chunked_logprob
    from trl.trainer import utils

    from pipeline.train import base

    scored: list[int] = []
    fused = utils._ChunkedLogProbFunction

    class Spy:  # how many positions each call scores
        @staticmethod
        def apply(hidden, *rest):
            scored.append(hidden.shape[0])
            return fused.apply(hidden, *rest)

    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", Spy)
    monkeypatch.setattr(utils, "_use_triton", chunked_logprob._use_triton)  # TRL's own, unpatched
    model = AutoModelForCausalLM.from_pretrained(train_base, dtype=torch.float32)
    utils.add_fused_lm_head(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :14] = -100  # the prompt
    labels[1, 20:] = -100  # padding

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    every_loss, every_grads = loss_and_grads()
    assert base.score_labelled_positions_only() and base.score_labelled_positions_only()  # idempotent
    assert utils._use_triton(torch.device("cpu")) and not utils._use_triton(torch.device("meta"))
    labelled_loss, labelled_grads = loss_and_grads()

    assert scored == [2 * 23, int((labels[:, 1:] != -100).sum())]  # every position, then the labelled ones
    torch.testing.assert_close(labelled_loss, every_loss)
    for a, b in zip(labelled_grads, every_grads, strict=True):
        torch.testing.assert_close(a, b)
