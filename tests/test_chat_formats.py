"""The train/serve contract: the Ollama TEMPLATE renders exactly what training gives the tokenizer."""

import pytest

from pipeline import chat_formats, prompt, serving
from pipeline.chat_formats import UnknownFormatError
from pipeline.modelfile import gotemplate

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
