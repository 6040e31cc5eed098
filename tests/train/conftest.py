from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def train_base(tmp_path_factory, tiny_texts):
    """A tiny Qwen2 with larger initial weights than the shared fixture's: with a frozen random lm_head
    of the usual tiny scale every logit is near zero, and no adapter could move the loss in a few steps."""
    from pipeline.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("train-base"), tiny_texts, "qwen2", initializer_range=0.3)
