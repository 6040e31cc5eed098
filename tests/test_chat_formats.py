"""The train/serve contract: the Ollama TEMPLATE renders exactly what training gives the tokenizer."""

import pytest

from contract import chat_formats, prompt, serving
from contract.chat_formats import UnknownFormatError
from contract.modelfile import gotemplate

CONTEXTS = [
    "It was a dark night.",
    "\u201cWho\u2019s there?\u201d\n\nNo answer came.  \n",
    "Line one.\r\nLine two with {{ braces }} and <|im_end|> text.",
]


def user_turn(text: str) -> dict:
    return {"role": "user", "content": text}


@pytest.mark.parametrize("name", list(chat_formats.FORMATS))
@pytest.mark.parametrize("context", CONTEXTS)
def test_template_matches_the_jinja_training_text(name, context):
    """Jinja (what the trainer applies) and Go (what Ollama applies) give the same bytes."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    fmt = chat_formats.get(name)
    user = prompt.render_prompt(context)
    jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(fmt.jinja)
    trained = jinja.render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True, bos_token=fmt.bos
    )
    served = gotemplate.execute(fmt.ollama_template(), [user_turn(prompt.clean_context(context))])
    assert trained == fmt.bos + served
    assert trained == fmt.render([{"role": "user", "content": user}], add_generation_prompt=True)
    # A full training example starts with exactly the served prompt.
    target = prompt.render_target("why", "what")
    full = jinja.render(
        messages=[{"role": "user", "content": user}, {"role": "assistant", "content": target}],
        bos_token=fmt.bos,
    )
    assert full.startswith(trained)
    assert full[len(trained) :].startswith(target)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_trained_tokenizer_renders_like_the_template(tiny_model, arch):
    """The chat template a real HF tokenizer applies equals the Ollama TEMPLATE's rendering."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model(arch))
    fmt = chat_formats.detect_from_jinja(tok.chat_template, tok.bos_token or "")
    assert fmt.name == ("qwen2.5" if arch == "qwen2" else "llama3")
    context = CONTEXTS[1]
    hf = tok.apply_chat_template(
        [{"role": "user", "content": prompt.render_prompt(context)}],
        tokenize=False,
        add_generation_prompt=True,
    )
    served = gotemplate.execute(fmt.ollama_template(), [user_turn(prompt.clean_context(context))])
    assert hf == fmt.bos + served


def test_system_override_is_rendered_the_same_way():
    fmt = chat_formats.get("qwen2.5")
    user = prompt.render_prompt("x")
    trained = fmt.render(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": user}], True
    )
    served = gotemplate.execute(
        fmt.ollama_template(), [{"role": "system", "content": "Be terse."}, user_turn("x")]
    )
    assert trained == served
    assert "You are Qwen" not in served


def test_detect_refuses_an_unknown_template():
    alpaca = "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}### assistant:\n"
    with pytest.raises(UnknownFormatError, match="matches none of the supported formats"):
        chat_formats.detect_from_jinja(alpaca)


def test_names():
    assert chat_formats.for_ollama_name("qwen2.5:7b-instruct").name == "qwen2.5"
    assert chat_formats.for_ollama_name("molbal/cra-v1-7b").name == "qwen2.5"
    assert chat_formats.for_ollama_name("llama3.1:8b").name == "llama3"
    assert chat_formats.for_ollama_name("llama3:8b").name == "llama3"
    with pytest.raises(UnknownFormatError, match="pass --format"):
        chat_formats.for_ollama_name("mistral:7b")
    with pytest.raises(UnknownFormatError, match="supported formats are"):
        chat_formats.get("alpaca")


def test_go_template_subset():
    assert gotemplate.render("a{{ if .X }}b{{ else }}c{{ end }}d", {"X": "1"}) == "abd"
    assert gotemplate.render("a{{ if .X }}b{{ else }}c{{ end }}d", {}) == "acd"
    assert gotemplate.render("a  {{- .X -}}  b", {"X": "x"}) == "axb"
    assert gotemplate.render("p{{ .Response }}tail", {}) == "p"
    assert gotemplate.render("p{{ .Response }}tail", {"Response": "r"}, generate=False) == "prtail"
    for bad in ("{{ with .Messages }}x{{ end }}", "{{ if .X }}", "{{ end }}", "{{ .X", "{{ printf .X }}"):
        with pytest.raises(gotemplate.TemplateError):
            gotemplate.render(bad, {})


class TestServing:
    writer_template = chat_formats.get("qwen2.5").ollama_template()
    plain_template = (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    )

    def test_writer_template_gets_the_whole_chat_text_raw(self):
        req = serving.build_request("  She ran. ", self.writer_template)
        assert req.raw and req.prompt == gotemplate.execute(self.writer_template, [user_turn("She ran.")])
        assert req.prompt.count(prompt.TASK_LINE) == 1
        assert req.user_text == prompt.render_prompt("She ran.")

    def test_plain_model_gets_the_writer_prompt_once(self):
        req = serving.build_request("She ran.", self.plain_template, guidance="Rain.", length="short")
        assert not req.raw and req.prompt == req.user_text
        assert gotemplate.render(self.plain_template, {"Prompt": req.prompt}).count(prompt.TASK_LINE) == 1

    def test_direction_on_a_writer_model_goes_raw_in_its_own_format(self):
        req = serving.build_request("She ran.", self.writer_template, guidance="Rain.")
        assert req.raw and req.prompt.count(prompt.TASK_LINE) == 1
        assert req.prompt == chat_formats.get("qwen2.5").generation_prompt(req.user_text)
        assert "### Guidance: Rain." in req.prompt

    def test_unknown_writer_template_with_direction_is_refused(self):
        custom = "USER: " + prompt.PROMPT_PREFIX + "{{ .Prompt }}\nASSISTANT:"
        with pytest.raises(serving.ServingError, match="recreate the model"):
            serving.build_request("x", custom, guidance="go")
        assert serving.build_request("x", custom).prompt == "x"

    def test_num_predict_grows_with_length(self):
        assert serving.num_predict("short") < serving.num_predict("medium") < serving.num_predict("long")


SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2-135M-Instruct's chat template, as its tokenizer_config.json and GGUF carry it.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOL_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Plain ChatML as many bases write it: the role inside the marker, no default system turn.
PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("name", list(chat_formats.FORMATS))
def test_each_format_is_told_apart_exactly(name):
    """ChatML, Qwen2 and Qwen2.5 render the same with a system turn; without one they differ."""
    fmt = chat_formats.get(name)
    assert chat_formats.detect_from_jinja(fmt.jinja, fmt.bos) == fmt


def test_plain_chatml_and_a_default_system_turn_of_its_own():
    assert chat_formats.detect_from_jinja(PLAIN_CHATML) == chat_formats.get("chatml")
    default = "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    qwen2 = PLAIN_CHATML.replace(
        "{% for", "{% if messages[0]['role'] != 'system' %}" + default + "{% endif %}{% for", 1
    )
    assert chat_formats.detect_from_jinja(qwen2).name == "qwen2"
    smol = chat_formats.detect_from_jinja(SMOLLM2)
    assert (smol.name, smol.default_system) == ("chatml", SMOL_SYSTEM)
    assert "own default system turn" in smol.description
    # that system turn is used wherever the format is: raw text, the Go TEMPLATE, the Jinja
    user = prompt.render_prompt("It rained.")
    raw = smol.generation_prompt(user)
    assert raw.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    ollama_run = gotemplate.execute(smol.ollama_template(), [{"role": "user", "content": "It rained."}])
    assert smol.bos + ollama_run == raw
    assert serving.served_format(smol.writer_jinja) == smol  # our GGUF chat template, recognised
    assert chat_formats.detect_from_jinja(smol.jinja) == smol
    assert chat_formats.from_ollama_template(smol.ollama_template()) == smol
    assert serving.format_of_template(smol.ollama_template()) == smol
    assert chat_formats.from_record(**chat_formats.record(smol)) == smol
    assert chat_formats.from_record("qwen2.5", chat_formats.get("qwen2.5").default_system).name == "qwen2.5"


@pytest.mark.parametrize(
    ("template", "family"),
    [
        ("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", "Mistral"),
        (
            "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
            "{% endfor %}",
            "Gemma",
        ),  # fmt: skip
        (SMOLLM2.replace("'\n' + message['content']", "'\n' + message['content'] | trim"), "ChatML written"),
        ("{{ raise_exception('no') }}", "cannot be rendered"),
    ],
)
def test_another_family_is_refused_by_name(template, family):
    with pytest.raises(UnknownFormatError, match=family):
        chat_formats.detect_from_jinja(template)


def test_a_smollm2_like_base_gets_a_modelfile_with_its_own_system_turn(tmp_path):
    from contract.modelfile import grammar
    from pipeline.modelfile import render

    base = tmp_path / "smol"
    base.mkdir()
    (base / "tokenizer_config.json").write_text('{"bos_token": null}')
    (base / "chat_template.jinja").write_text(SMOLLM2)
    (base / "model.safetensors").write_bytes(b"")  # Ollama refuses a FROM folder without weights
    path, problems = render.write(tmp_path / "M.Modelfile", str(base))
    template = grammar.parse(path.read_text(encoding="utf-8")).first("template")
    ollama_run = gotemplate.execute(template, [{"role": "user", "content": "It rained."}])
    assert ollama_run.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert "You are Qwen" not in template and not [p for p in problems if p.severity == "error"]
    (base / "chat_template.jinja").write_text(PLAIN_CHATML)
    path, _ = render.write(tmp_path / "N.Modelfile", str(base))
    plain = grammar.parse(path.read_text(encoding="utf-8")).first("template")
    assert gotemplate.execute(plain, [{"role": "user", "content": "It rained."}]).startswith(
        "<|im_start|>user\n"
    )  # plain ChatML: no system turn of its own
