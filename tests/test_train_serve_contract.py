"""No train/serve skew: the text the training code renders is the text the model reads when served.

The training side is the chat format's Jinja chat template over a training row's user turn (what `train`
sets on the tokenizer; `pipeline.train.rows.encode_sft` is what the trainer feeds the model). The
serving side, every way a model of ours can be reached on today's Ollama:
(i) the raw request the bot builds (contract/serving.py), with and without a direction or length;
(ii) `ollama run` (/api/chat) through the Modelfile TEMPLATE we write, on a base whose GGUF chat template
    mentions tools, rendered by the stand-in Ollama's Go path after Ollama's own template selection;
(iii) the chat template we write into our GGUF exports, rendered with Jinja as llama-server does;
(iv) a base GGUF chat template with tools (Qwen2.5-Instruct-like), which Ollama preferred to our old
    TEMPLATE: it now keeps ours, and even where it renders the base's the writer prompt arrives.
"""

import hashlib

import httpx
import ollama
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import AutoTokenizer

from contract import chat_formats, prompt, serving
from contract.modelfile import gotemplate, grammar
from pipeline.modelfile import render, selection
from pipeline.train import rows
from tests.fakes.ollama import QWEN25_LIKE_CHAT_TEMPLATE, model_gguf

CONTEXT = "\u201cWho\u2019s there?\u201d she called.\r\n\r\nNo answer. ### Context: not a header </answer>  "
CLEAN = prompt.clean_context(CONTEXT)  # what a writer types into `ollama run`: the story so far
FORMATS = list(chat_formats.FORMATS)
DIRECTIONS = [(None, None), ("The storm breaks.", None), (None, "short"), ("The storm breaks.", 320)]


def trained(fmt: chat_formats.ChatFormat, user: str, system: str | None = None) -> str:
    """The prompt part of a training example: the format's chat template, generation prompt added."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    return env.from_string(fmt.jinja).render(messages=messages, add_generation_prompt=True, bos_token=fmt.bos)


def our_template(tmp_path, name: str) -> str:
    """The TEMPLATE `story-pipeline modelfile` writes for a base of this format."""
    path, _ = render.write(tmp_path / f"{name}.Modelfile", "qwen2.5:7b-instruct", format_name=name)
    return grammar.parse(path.read_text(encoding="utf-8")).first("template")


def upload(url: str, data: bytes) -> str:
    """Push a model layer as `ollama create` does: the blob first, by its digest."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert httpx.post(f"{url}/api/blobs/{digest}", content=data).status_code == 201
    return digest


def legacy_template(fmt: chat_formats.ChatFormat) -> str:
    """The TEMPLATE we shipped before this contract covered today's Ollama: `.Prompt`, no `.Tools`."""
    suffix = "" if fmt.trim_content else prompt.PROMPT_SUFFIX
    system = "{{ if .System }}" + fmt.system_open + "{{ .System }}" + fmt.turn_close
    if fmt.default_system is not None:
        system += "{{ else }}" + fmt.system_open + fmt.default_system + fmt.turn_close
    return (system + "{{ end }}" + fmt.user_open + prompt.PROMPT_PREFIX + "{{ .Prompt }}" + suffix
            + fmt.turn_close + fmt.assistant_open + "{{ .Response }}" + fmt.turn_close)  # fmt: skip


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("guidance, length", [(None, None), ("The storm breaks.", "short")])
def test_training_tokens_are_what_the_bot_sends(tmp_path, tiny_model, arch, guidance, length):
    """With a real tokenizer: the bytes the trainer tokenises are the raw request, after the BOS."""
    base = tiny_model(arch)
    tok = AutoTokenizer.from_pretrained(base)
    row = prompt.training_row(CONTEXT, "She is afraid.", "She opened the door.", guidance, length)
    enc = rows.encode_sft(tok, row, max_length=4096)
    n_prompt = enc.labels.count(-100)
    trained_prompt = tok.decode(enc.input_ids[:n_prompt])

    modelfile, _ = render.write(tmp_path / "Writer.Modelfile", str(base))
    mf = grammar.parse(modelfile.read_text(encoding="utf-8"))
    request = serving.build_request(CONTEXT, mf.first("template"), guidance, length, mf.first("system"))
    assert request.raw  # the bot renders the whole chat text itself
    bos = tok.bos_token if tok.bos_token and trained_prompt.startswith(tok.bos_token) else ""
    assert trained_prompt == bos + request.prompt
    assert request.user_text == row["messages"][0]["content"]
    # And what the model learns to write after that prompt is exactly the target, then the turn's end.
    assert tok.decode(enc.input_ids[n_prompt:]).startswith(row["messages"][1]["content"])


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("guidance, length", DIRECTIONS)
def test_i_raw_request_is_the_training_text(tmp_path, name, guidance, length):
    fmt = chat_formats.get(name)
    user = prompt.render_prompt(CONTEXT, guidance, length)
    for template in (our_template(tmp_path, name), legacy_template(fmt), fmt.writer_jinja):
        request = serving.build_request(CONTEXT, template, guidance, length)
        assert request.raw and request.user_text == user
        assert fmt.bos + request.prompt == trained(fmt, user)  # the runtime adds the BOS to a raw prompt
        with_system = serving.build_request(CONTEXT, template, guidance, length, system="Be terse.")
        assert fmt.bos + with_system.prompt == trained(fmt, user, "Be terse.")  # the Modelfile's SYSTEM


@pytest.mark.parametrize("name", FORMATS)
def test_ii_ollama_run_through_our_template_on_a_tools_base(tmp_path, fake_ollama, name):
    fmt, template = chat_formats.get(name), our_template(tmp_path, name)
    # Ollama's own rule keeps our TEMPLATE over a chat template with tools and a tool round trip
    assert selection.go_template_capabilities(template) == {"tools"}
    assert selection.go_template_round_trip(template)
    assert not selection.uses_chat_template(template, QWEN25_LIKE_CHAT_TEMPLATE, {})
    client = ollama.Client(host=fake_ollama.url)
    digest = upload(fake_ollama.url, model_gguf(QWEN25_LIKE_CHAT_TEMPLATE))
    client.create(model="base", files={"model.gguf": digest})
    client.create(model="writer", from_="base", template=template)
    client.create(model="terse", from_="writer", system="Be terse.")
    assert client.show("writer").template == template  # the one Ollama selected
    client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}])
    assert fmt.bos + fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))
    client.chat(model="terse", messages=[{"role": "user", "content": CLEAN}])
    assert fmt.bos + fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN), "Be terse.")
    # a later turn is wrapped like the first, as training would render that conversation
    answer = prompt.render_target("She waits.", "The door opened.")
    turns = [{"role": "user", "content": CLEAN}, {"role": "assistant", "content": answer},
             {"role": "user", "content": "Then the lamp went out."}]  # fmt: skip
    client.chat(model="writer", messages=turns)
    expected = fmt.render(
        [{"role": "user", "content": prompt.render_prompt(CLEAN)}, turns[1],
         {"role": "user", "content": prompt.render_prompt(turns[2]["content"])}], add_generation_prompt=True,
    )  # fmt: skip
    assert fmt.bos + fake_ollama.rendered[-1] == expected
    # a non-raw generate (what `ollama run` with a prompt argument does) renders the same way
    client.generate(model="writer", prompt=CLEAN)
    assert fmt.bos + fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))


@pytest.mark.parametrize("name", FORMATS)
def test_iii_our_gguf_chat_template_renders_the_training_text(fake_ollama, name):
    fmt = chat_formats.get(name)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    ours = env.from_string(fmt.writer_jinja)
    for system in (None, "Be terse."):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": CLEAN}
        ]
        got = ours.render(messages=messages, add_generation_prompt=True, bos_token=fmt.bos, eos_token="")
        assert got == trained(fmt, prompt.render_prompt(CLEAN), system)
    # Served from a GGUF export with no TEMPLATE, or with a TEMPLATE the server is told to set aside
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "0"}
    client = ollama.Client(host=fake_ollama.url)
    digest = upload(fake_ollama.url, model_gguf(fmt.writer_jinja, bos=fmt.bos))
    client.create(model="export", files={"model.gguf": digest})
    client.create(model="aside", from_="export", template="{{ .Prompt }}")
    for model in ("export", "aside"):
        client.chat(model=model, messages=[{"role": "user", "content": CLEAN}])
        assert fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))
        # the bot sees our chat template in /api/show, knows the model for ours, and sends the same raw
        request = serving.build_request(CONTEXT, client.show(model).template)
        client.generate(model=model, **request.fields())
        assert fmt.bos + fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))


@pytest.mark.parametrize("guidance, length", DIRECTIONS)
def test_iv_a_tools_base_chat_template_no_longer_takes_the_writer_prompt(
    tmp_path, fake_ollama, guidance, length
):
    """What was found: on a Qwen2.5-Instruct base Ollama rendered the base's chat template, not ours."""
    fmt = chat_formats.get("qwen2.5")
    client = ollama.Client(host=fake_ollama.url)
    client.create(
        model="base", files={"model.gguf": upload(fake_ollama.url, model_gguf(QWEN25_LIKE_CHAT_TEMPLATE))}
    )
    client.create(model="old", from_="base", template=legacy_template(fmt))
    client.create(model="writer", from_="base", template=our_template(tmp_path, "qwen2.5"))
    # our old TEMPLATE is set aside, as Ollama v0.33 does: `ollama run` lost the writer prompt
    assert client.show("old").template == QWEN25_LIKE_CHAT_TEMPLATE
    client.chat(model="old", messages=[{"role": "user", "content": CLEAN}])
    assert prompt.TASK_LINE not in fake_ollama.rendered[-1]
    # the TEMPLATE we write now is kept
    client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}])
    assert fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))
    # and what the bot sends gives the training text on either model, whichever template is selected
    user = prompt.render_prompt(CONTEXT, guidance, length)
    for model in ("old", "writer"):
        request = serving.build_request(CONTEXT, client.show(model).template, guidance, length)
        client.generate(model=model, **request.fields())
        assert fake_ollama.rendered[-1] == trained(fmt, user)


def test_ollama_go_template_forces_either_template(tmp_path, fake_ollama):
    fmt = chat_formats.get("qwen2.5")
    client = ollama.Client(host=fake_ollama.url)
    client.create(
        model="base", files={"model.gguf": upload(fake_ollama.url, model_gguf(QWEN25_LIKE_CHAT_TEMPLATE))}
    )
    client.create(model="old", from_="base", template=legacy_template(fmt))
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "1"}
    client.chat(model="old", messages=[{"role": "user", "content": CLEAN}])
    assert fake_ollama.rendered[-1] == trained(fmt, prompt.render_prompt(CLEAN))
    fake_ollama.environ = {"OLLAMA_GO_TEMPLATE": "false"}
    client.create(model="writer", from_="base", template=our_template(tmp_path, "qwen2.5"))
    client.chat(model="writer", messages=[{"role": "user", "content": CLEAN}])
    assert fake_ollama.rendered[-1] == trained(fmt, CLEAN)  # the base's template: no writer prompt
    assert gotemplate.execute(
        our_template(tmp_path, "qwen2.5"), [{"role": "user", "content": CLEAN}]
    ) == trained(fmt, prompt.render_prompt(CLEAN))
