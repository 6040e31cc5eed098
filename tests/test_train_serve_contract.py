"""No train/serve skew, for every family: the text training renders is the text the model reads when served.

One case per family (tests/families.py: the real chat templates llama.cpp ships). The training side is
the base's chat template, pinned (`contract.chat_template`), over a training row's user turn; with a
real tokenizer, `pipeline.train.rows.encode_sft` is what the trainer feeds the model. The serving side,
every way a model of ours is reached on today's Ollama (read in its source, v0.33.0-rc2:
server/images.go for the selection, template/template.go for `.Messages`, server/create.go for FROM):
(i) the raw request the bot builds (contract/serving.py), with and without a direction, length or system;
(ii) `ollama run` (/api/chat) through the TEMPLATE `story-pipeline modelfile` writes, on a base GGUF that
    carries the family's real chat template, after Ollama's own template selection;
(iii) the chat template our GGUF exports carry, rendered with Jinja as llama-server does, on a later day
    than training: the date it writes is the one training pinned;
(iv) a TEMPLATE without tools (what we shipped before): Ollama sets it aside for the base's template.
"""

import hashlib

import httpx
import ollama
import pytest

from contract import go_chat, prompt, serving
from contract.modelfile import grammar
from pipeline.modelfile import render, selection
from tests.fakes.ollama import model_gguf
from tests.families import BY_NAME, FAMILIES, Family

CONTEXT = "\u201cWho\u2019s there?\u201d she called.\r\n\r\nNo answer. ### Context: not a header </answer>  "
CLEAN = prompt.clean_context(CONTEXT)  # what a writer types into `ollama run`: the story so far
DIRECTIONS = [(None, None), ("The storm breaks.", None), (None, "short"), ("The storm breaks.", 320)]
TRAINED_ON = "2025-03-01"  # not today: serving must write the day training saw
NAMES = [f.name for f in FAMILIES]


def trained(f: Family, user: str, system: str | None = None) -> str:
    """The prompt part of a training example: the family's pinned template, generation prompt added."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return f.template(TRAINED_ON).render(messages, add_generation_prompt=True)


def our_template(tmp_path, f: Family) -> str:
    """The TEMPLATE `story-pipeline modelfile` writes for this family's base."""
    out = tmp_path / f"{f.name}.Modelfile"
    path, _ = render.write(out, f.library or "base:1b", template=f.template(TRAINED_ON))
    return grammar.parse(path.read_text(encoding="utf-8")).first("template")


def upload(url: str, data: bytes) -> str:
    """Push a model layer as `ollama create` does: the blob first, by its digest."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert httpx.post(f"{url}/api/blobs/{digest}", content=data).status_code == 201
    return digest


def bos(f: Family, text: str) -> str:
    """The BOS the runtime adds before a raw prompt, where the template writes one."""
    return f.bos if f.bos and text.startswith(f.bos) else ""


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("guidance, length", DIRECTIONS)
def test_i_raw_request_is_the_training_text(tmp_path, name, guidance, length):
    f = BY_NAME[name]
    user = prompt.render_prompt(CONTEXT, guidance, length)
    for template in (our_template(tmp_path, f), f.template(TRAINED_ON).pinned_jinja(writer=True)):
        request = serving.build_request(CONTEXT, template, guidance, length)
        assert request.raw and request.user_text == user
        want = trained(f, user)
        assert bos(f, want) + request.prompt == want  # the runtime adds the BOS to a raw prompt
        with_system = serving.build_request(CONTEXT, template, guidance, length, system="Be terse.")
        want = trained(f, user, "Be terse.")
        assert bos(f, want) + with_system.prompt == want  # the Modelfile's SYSTEM, where the family puts it


@pytest.mark.parametrize("name", NAMES)
def test_ii_ollama_run_through_our_template(tmp_path, fake_ollama, name):
    f = BY_NAME[name]
    base_template, template = f.template().source, our_template(tmp_path, f)
    # Ollama's own rule keeps our TEMPLATE over the family's real chat template
    assert not selection.uses_chat_template(template, base_template, {})
    assert selection.go_template_round_trip(template)
    thinks = "thinking" in selection.chat_template_capabilities(base_template)
    assert ("thinking" in selection.go_template_capabilities(template)) == thinks
    client = ollama.Client(host=fake_ollama.url)
    digest = upload(fake_ollama.url, model_gguf(base_template, bos=f.bos, eos=f.eos))
    client.create(model="base", files={"model.gguf": digest})
    client.create(model="writer", from_="base", template=template)
    client.create(model="terse", from_="writer", system="Be terse.")
    assert client.show("writer").template == template  # the one Ollama selected
    client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}])
    want = trained(f, prompt.render_prompt(CLEAN))
    assert bos(f, want) + fake_ollama.rendered[-1] == want
    client.chat(model="terse", messages=[{"role": "user", "content": CLEAN}])
    want = trained(f, prompt.render_prompt(CLEAN), "Be terse.")
    assert bos(f, want) + fake_ollama.rendered[-1] == want
    # a later turn is wrapped like the first, as training would render that conversation
    answer = prompt.render_target("She waits.", "The door opened.")
    turns = [
        {"role": "user", "content": CLEAN},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Then the lamp went out."},
    ]
    client.chat(model="writer", messages=turns)
    want = f.template(TRAINED_ON).render(
        [
            {"role": "user", "content": prompt.render_prompt(CLEAN)},
            turns[1],
            {"role": "user", "content": prompt.render_prompt(turns[2]["content"])},
        ],
        add_generation_prompt=True,
    )
    assert bos(f, want) + fake_ollama.rendered[-1] == want
    # Ollama's think option changes nothing the model reads: the family's think block stays closed
    if thinks:
        client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}], think=True)
        want = trained(f, prompt.render_prompt(CLEAN))
        assert bos(f, want) + fake_ollama.rendered[-1] == want
    # a non-raw generate (what `ollama run` with a prompt argument does) renders the same way
    client.generate(model="writer", prompt=CLEAN)
    want = trained(f, prompt.render_prompt(CLEAN))
    assert bos(f, want) + fake_ollama.rendered[-1] == want


@pytest.mark.parametrize("name", NAMES)
def test_iii_our_gguf_chat_template_renders_the_training_text(fake_ollama, name):
    f = BY_NAME[name]
    ours = f.template(TRAINED_ON).pinned_jinja(writer=True)
    # Served from a GGUF export with no TEMPLATE, or with a TEMPLATE the server is told to set aside
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "0"}
    client = ollama.Client(host=fake_ollama.url)
    client.create(
        model="export", files={"model.gguf": upload(fake_ollama.url, model_gguf(ours, f.bos, f.eos))}
    )
    client.create(model="aside", from_="export", template="{{ .Prompt }}")
    for model in ("export", "aside"):
        for system in (None, "Be terse."):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": CLEAN}
            ]
            client.chat(model=model, messages=messages)
            assert fake_ollama.rendered[-1] == trained(f, prompt.render_prompt(CLEAN), system)
        # the bot sees our chat template in /api/show, reads the template it carries, sends the same raw
        request = serving.build_request(CONTEXT, client.show(model).template)
        client.generate(model=model, **request.fields())
        want = trained(f, prompt.render_prompt(CLEAN))
        assert bos(f, want) + fake_ollama.rendered[-1] == want


def legacy_template(f: Family) -> str:
    """A writer TEMPLATE as we wrote them before Ollama chose templates by capability: no `.Tools`."""
    turns = go_chat.turns_of(f.template(TRAINED_ON))
    return (
        turns.start
        + prompt.PROMPT_PREFIX
        + "{{ .Prompt }}"
        + prompt.PROMPT_SUFFIX
        + turns.end
        + "{{ .Response }}"
    )


def test_iv_a_template_without_tools_is_set_aside_and_ours_is_kept(tmp_path, fake_ollama):
    """What was found: on a Qwen2.5-Instruct base Ollama renders the base's chat template, not a TEMPLATE
    that mentions no tools; ours is kept, and the bot's raw requests give the training text on both."""
    f = BY_NAME["qwen2.5"]
    client = ollama.Client(host=fake_ollama.url)
    client.create(
        model="base", files={"model.gguf": upload(fake_ollama.url, model_gguf(f.template().source))}
    )
    client.create(model="old", from_="base", template=legacy_template(f))
    client.create(model="writer", from_="base", template=our_template(tmp_path, f))
    assert client.show("old").template == f.template().source
    client.chat(model="old", messages=[{"role": "user", "content": CLEAN}])
    assert prompt.TASK_LINE not in fake_ollama.rendered[-1]
    client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}])
    assert fake_ollama.rendered[-1] == trained(f, prompt.render_prompt(CLEAN))
    # OLLAMA_GO_TEMPLATE=1 forces even the old TEMPLATE
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "1"}
    client.chat(model="old", messages=[{"role": "user", "content": CLEAN}])
    assert fake_ollama.rendered[-1] == trained(f, prompt.render_prompt(CLEAN))
