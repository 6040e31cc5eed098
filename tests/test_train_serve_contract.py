"""No train/serve skew: the text the training code tokenizes is the text Ollama renders at serving time.

The training side is `pipeline.train.rows.encode_sft` (what the trainer actually feeds the model); the
serving side is the Modelfile that `story-pipeline modelfile` writes for the same base, rendered with Go
template semantics, and the raw prompt the bot sends when a direction or length is asked for.
"""

import pytest
from transformers import AutoTokenizer

from pipeline import prompt, serving
from pipeline.modelfile import gotemplate, grammar, render
from pipeline.train import rows

CONTEXT = "\u201cWho\u2019s there?\u201d she called.\r\n\r\nNo answer. ### Context: not a header </answer>  "


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("guidance, length", [(None, None), ("The storm breaks.", "short")])
def test_training_tokens_are_what_ollama_serves(tmp_path, tiny_model, arch, guidance, length):
    base = tiny_model(arch)
    tok = AutoTokenizer.from_pretrained(base)
    row = prompt.training_row(CONTEXT, "She is afraid.", "She opened the door.", guidance, length)
    enc = rows.encode_sft(tok, row, max_length=4096)
    n_prompt = enc.labels.count(-100)
    trained_prompt = tok.decode(enc.input_ids[:n_prompt])

    modelfile, _ = render.write(tmp_path / "Writer.Modelfile", str(base))
    mf = grammar.parse(modelfile.read_text(encoding="utf-8"))
    template = mf.first("template")
    request = serving.build_request(CONTEXT, template, guidance, length)
    if request.raw:  # the bot renders the whole chat text itself
        served = request.prompt
    else:  # Ollama renders the TEMPLATE around what the bot sends
        served = gotemplate.render(template, {"Prompt": request.prompt, "System": mf.first("system") or ""})
    bos = tok.bos_token if tok.bos_token and trained_prompt.startswith(tok.bos_token) else ""
    assert trained_prompt == bos + served
    assert request.user_text == row["messages"][0]["content"]
    # And what the model learns to write after that prompt is exactly the target, then the turn's end.
    assert tok.decode(enc.input_ids[n_prompt:]).startswith(row["messages"][1]["content"])
