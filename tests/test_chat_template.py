"""The base's own chat template as the one source of bytes (contract/chat_template.py, contract/go_chat.py).

Table-driven over the families writers train today (tests/families.py, real templates from the pinned
llama-cpp-python sdist): rendered as transformers renders them, pinned, carried, and turned into a Go
TEMPLATE that gives `ollama run` the same bytes. A family we do not know is served without new code when
its template renders a plain conversation, and refused by name when it does not.
"""

from __future__ import annotations

import pytest

from contract import chat_template, go_chat, prompt
from contract.chat_template import ChatTemplate, UnknownFamilyError
from contract.modelfile import gotemplate
from tests.families import BY_NAME, FAMILIES, source

NAMES = [f.name for f in FAMILIES]
USER = prompt.render_prompt("Rain on the roof. \u201cWho\u2019s there?\u201d")


def conversations() -> list[list[dict]]:
    reply = prompt.render_target("She is afraid.", "The door opened.")
    return [
        [{"role": "user", "content": USER}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": USER}],
        [
            {"role": "user", "content": USER},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": USER},
        ],
    ]


@pytest.mark.parametrize("name", NAMES)
def test_pinned_template_renders_in_transformers_what_training_renders(name):
    """transformers (TRL's renderer too) gives exactly `ChatTemplate.render` from the pinned template, on
    any day: the date, the thinking switch and the closed think block travel inside it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    f = BY_NAME[name]
    t = f.template("2025-03-01")
    for messages in conversations():
        [got], _ = render_jinja_template(
            [messages],
            chat_template=t.pinned_jinja(),
            add_generation_prompt=True,
            bos_token=f.bos,
            eos_token=f.eos,
        )
        assert got == t.render(messages, add_generation_prompt=True)


@pytest.mark.parametrize("name", NAMES)
def test_the_unpinned_render_is_transformers_own(name):
    """Without pins, our environment is transformers': same text for the same template and arguments."""
    from transformers.utils.chat_template_utils import render_jinja_template

    f = BY_NAME[name]
    t = f.template(__import__("datetime").date.today().isoformat())
    messages = conversations()[0]
    [got], _ = render_jinja_template(
        [messages],
        chat_template=t.source,
        add_generation_prompt=False,
        bos_token=f.bos,
        eos_token=f.eos,
        enable_thinking=False,
    )
    assert got == t.render(messages)


@pytest.mark.parametrize("name", NAMES)
def test_go_template_gives_ollama_run_the_training_bytes(name):
    f = BY_NAME[name]
    t = f.template()
    go = go_chat.writer_template(t)
    assert chat_template.decode(go) == t  # the template it was made from rides along
    for messages in conversations():
        ollama_turns = [
            {**m, "content": prompt.split_prompt(m["content"])[0]} if m["role"] == "user" else m  # type: ignore[index]
            for m in messages
        ]
        want = t.render(messages, add_generation_prompt=True)
        assert t.without_bos(want) == gotemplate.execute(go, ollama_turns)


def test_dates_are_pinned_where_a_family_writes_them():
    llama = BY_NAME["llama3.2"]
    first, later = llama.template("2025-03-01"), llama.template("2026-12-06")
    assert "Today Date: 01 Mar 2025" in first.prompt(USER)
    assert "Today Date: 06 Dec 2026" in later.prompt(USER)
    mistral = BY_NAME["mistral-small3.2"].template("2025-03-01")
    assert "The current date is 2025-03-01." in mistral.prompt(USER)
    assert chat_template.from_record(mistral.record()) == mistral


@pytest.mark.parametrize(
    "name, tail",
    [
        ("deepseek-r1-distill-qwen", "<｜Assistant｜><think>\n</think>"),  # the switch off closes it
        ("deepseek-r1-llama.cpp", "<｜Assistant｜><think>\n</think>"),  # always open: closed for it
        ("qwen3", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),  # enable_thinking=False
        ("qwq", "<|im_start|>assistant\n<think>\n</think>"),
    ],
)
def test_thinking_families_get_a_closed_think_block_and_reason_in_ours(name, tail):
    t = BY_NAME[name].template()
    assert t.prompt(USER).endswith(tail) and t.thinks
    assert "<think>{{ .Thinking }}</think>" in go_chat.writer_template(
        t
    )  # Ollama counts ours thinking-capable too


def test_a_family_without_a_system_role_gets_it_where_its_template_puts_turns():
    gemma = BY_NAME["gemma2"].template()
    assert not gemma.system_role
    text = gemma.prompt(USER, "Be terse.")
    assert text.startswith("<start_of_turn>user\nBe terse.\n\n" + prompt.PROMPT_PREFIX)


def test_mistral_nemo_puts_the_system_turn_in_the_last_user_turn():
    nemo = BY_NAME["mistral-nemo"].template()
    reply = prompt.render_target("r", "a")
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": USER},
    ]
    text = nemo.render(messages, add_generation_prompt=True)
    assert text.count("Be terse.") == 1 and text.index("Be terse.") > text.index(reply)
    assert go_chat.turns_of(nemo).system_last is not None


NEW_FAMILY = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<|sys|>{{ m['content'] }}<|/sys|>\n"
    "{% elif m['role'] == 'user' %}### Human: {{ m['content'] }}\n{% else %}### Bot: {{ m['content'] }}"
    "{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}### Bot:{% endif %}"
)


def test_a_new_family_with_a_plain_conversation_works_without_new_code():
    t = ChatTemplate(NEW_FAMILY, "<s>", "</s>")
    go_chat.check(t)
    assert t.stops == ("</s>",) and t.family == "a chat format of its own"
    want = t.without_bos(t.render([{"role": "user", "content": USER}], add_generation_prompt=True))
    got = gotemplate.execute(
        go_chat.writer_template(t), [{"role": "user", "content": prompt.split_prompt(USER)[0]}]
    )  # type: ignore[index]
    assert want == got == f"### Human: {USER}\n### Bot:"


@pytest.mark.parametrize(
    "template, message",
    [
        (
            "{% for m in messages if m.role != 'system' %}{{ m['content'] }}{% endfor %}",
            "drops the system turn",
        ),
        ("{% for m in messages|reverse %}{{ m['content'] }}{% endfor %}", "reorders the messages"),
        ("{{ messages[-1]['content'] }}", "does not write each message once"),
        ("{% for m in messages %}{{ m['content'] | upper }}{% endfor %}", "no Go TEMPLATE renders what"),
    ],
)
def test_a_template_no_go_template_can_follow_is_refused_by_name(template, message):
    with pytest.raises(UnknownFamilyError, match=message):
        go_chat.check(ChatTemplate(template))


def test_a_real_template_that_needs_more_than_a_conversation_is_refused_by_name():
    firefunction = ChatTemplate(
        source("fireworks-ai-llama-3-firefunction-v2.jinja"), "<|begin_of_text|>", "<|eot_id|>"
    )
    with pytest.raises(
        UnknownFamilyError, match="Llama 3 headers.*cannot render a plain conversation.*functions"
    ):
        go_chat.check(firefunction)


def test_a_hand_edited_template_is_not_taken_for_ours():
    from contract import serving

    ours = go_chat.writer_template(BY_NAME["qwen2.5"].template())
    assert serving.served_template(ours) is not None
    edited = ours.replace("<|im_start|>user\n", "<|im_start|>user \n")
    assert serving.served_template(edited) is None
    with pytest.raises(serving.ServingError, match="recreate the model"):
        serving.request_for(edited, USER)
