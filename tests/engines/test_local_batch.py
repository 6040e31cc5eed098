"""Many requests decoded together by the local engine (`engines/local_batch.py`), on the real SmolLM2 GGUF.

A batch is only faster; each job must still be the request it was: its own seed, budget and stops, its
prompt kept apart from its neighbours' (a KV cell leaking between sequences changes the text), and a job
alone decoded exactly as the streaming path decodes it. Which jobs share a step changes the float
rounding of llama.cpp's quantized matrix products (a different kernel for four rows or more), so outputs
are compared with the stream only where the shapes match."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from engines.local_batch import complete_many  # noqa: E402
from engines.local_engine import LocalModel, PromptTooLong  # noqa: E402

CONTEXTS = [
    "The rain fell on the old house, and Mara lit the lamp.",
    "At the harbour the boats knocked together in the dark.",
    "Tom counted the coins twice before he spoke.",
]


@pytest.fixture(scope="module")
def model(smollm2_gguf):
    m = LocalModel(smollm2_gguf, n_ctx=512, n_threads=2)
    yield m
    m.close()


def _job(model: LocalModel, context: str, **options):
    return model.build_request(context), {"num_predict": 24, "seed": 7, **options}


def test_a_job_alone_is_the_stream_token_for_token(model):
    job = _job(model, CONTEXTS[0], temperature=0.9)
    ((text, figures),) = complete_many(model, [job])
    streamed, streamed_figures = model.complete(*job)
    assert text == streamed and text
    for key in ("prompt_eval_count", "eval_count", "done_reason"):
        assert figures[key] == streamed_figures[key]


def test_jobs_with_one_prompt_read_it_once_and_stay_apart(model):
    """The second to fourth copy the first's KV cells; a copy that missed or leaked would change them."""
    same = complete_many(model, [_job(model, CONTEXTS[1])] * 4, parallel=4)
    assert len({text for text, _ in same}) == 1 and same[0][0]
    seeds = complete_many(model, [_job(model, CONTEXTS[1], seed=s) for s in range(4)], parallel=4)
    assert len({text for text, _ in seeds}) > 1  # the dice are each job's own
    assert {f["prompt_eval_count"] for _, f in same + seeds} == {same[0][1]["prompt_eval_count"]}


def test_each_job_keeps_its_budget_and_stops_in_order_and_reruns_alike(model):
    jobs = [
        _job(model, CONTEXTS[0], num_predict=3),
        _job(model, CONTEXTS[1], stop=[" the", "."], num_predict=60),
        _job(model, CONTEXTS[2], num_predict=17),
        _job(model, CONTEXTS[0], num_predict=9, temperature=0.0),
        _job(model, CONTEXTS[2], num_predict=1),
    ]
    finished: list[int] = []
    out = complete_many(model, jobs, parallel=2, on_done=finished.append)
    assert sorted(finished) == list(range(5))  # each job reported once, as it ended
    # each budget met (a sampled end of turn would end one sooner; SmolLM2 writes none this early here)
    assert [f["eval_count"] for _, f in out][::2] == [3, 17, 1]
    assert out[0][1]["done_reason"] == "length"
    text, figures = out[1]
    assert " the" not in text and "." not in text
    assert figures["done_reason"] == "stop" or figures["eval_count"] == 60
    assert out[3][1]["eval_count"] <= 9
    assert [t for t, _ in complete_many(model, jobs, parallel=2)] == [t for t, _ in out]  # the same dice


def test_a_prompt_longer_than_the_context_is_refused_before_any_decoding(model):
    long = _job(model, "word " * 600)
    with pytest.raises(PromptTooLong, match="larger n_ctx"):
        complete_many(model, [_job(model, CONTEXTS[0]), long])
    with pytest.raises(ValueError, match="at least 1"):
        complete_many(model, [_job(model, CONTEXTS[0])], parallel=0)
    assert complete_many(model, []) == []
