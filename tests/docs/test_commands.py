"""Every command the documentation shows exists: the `story-pipeline`, `story-bot` and `story-demo` lines
of every shell block in docs/, README.md and CONTRIBUTING.md name only verbs and flags their typer app
has, `make` lines name only the Makefile's targets, and benchmark lines only the script's flags."""

from __future__ import annotations

import pytest

from tests.docs import blocks


def _checked() -> list[tuple[str, list[str]]]:
    out = []
    for block in blocks.shell_blocks():
        for command in block.commands():
            out += [(block.where(), argv) for argv in blocks.simple_commands(command)]
    return out


def test_every_documented_command_names_verbs_and_flags_that_exist():
    checked, wrong = 0, []
    for where, argv in _checked():
        found = blocks.problems(argv)
        if found is None:
            continue
        checked += 1
        wrong += [f"{where}: {' '.join(argv)}\n    {p}" for p in found]
    assert not wrong, "\n".join(wrong)
    assert checked >= 60, f"only {checked} commands found: is the block reader broken?"


def test_every_verb_of_the_pipeline_is_shown_somewhere():
    shown = {tuple(argv[1:3]) for _, argv in _checked() if argv[0] == "story-pipeline"}
    verbs = {v for pair in shown for v in pair[:1]}
    for verb in (
        "models",
        "data",
        "reason",
        "distill",
        "train",
        "export-gguf",
        "export-merged",
        "export-base",
        "verify-gguf",
        "modelfile",
        "publish",
        "eval",
        "feedback",
    ):
        assert verb in verbs, f"no documented command runs `story-pipeline {verb}`"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("story-pipeline train --base x --no-such-flag 3", "has no option --no-such-flag"),
        ("story-pipeline dta gutenberg books/", "has no verb 'dta'"),
        (
            "story-pipeline data gutenberg books/ -o x --context 3",
            "`story-pipeline data gutenberg` has no option",
        ),
        ("story-bot console --gguf a.gguf --lora blocks.gguf --temperature 1", "has no option --temperature"),
        ("story-pipeline modelfile check --from x", "`story-pipeline modelfile check` has no option --from"),
        ("make tests", "the Makefile has no target 'tests'"),
        ("python benchmarks/bench_scale.py --nodes 3", "has no option --nodes"),
    ],
)
def test_the_check_catches_what_does_not_exist(line, problem):
    (argv,) = list(blocks.simple_commands(line))
    assert any(problem in p for p in blocks.problems(argv) or []), blocks.problems(argv)


@pytest.mark.parametrize(
    "line",
    [
        "story-pipeline --debug train --base x -o y --data z --no-qlora --lr=1e-3",
        "story-pipeline modelfile --from qwen2.5:7b-instruct --adapter a.gguf -o W.Modelfile --param x=8",
        "story-pipeline modelfile check W.Modelfile modelfiles/a.Modelfile",
        "story-demo --quick -o work/demo",
        "make docs",
    ],
)
def test_the_check_passes_what_exists(line):
    (argv,) = list(blocks.simple_commands(line))
    assert blocks.problems(argv) == []


def test_a_line_splits_into_its_simple_commands():
    line = "OPENAI_API_KEY=k story-pipeline reason a -o b && ollama create w -f M > log.txt 2>&1 &"
    assert list(blocks.simple_commands(line)) == [
        ["story-pipeline", "reason", "a", "-o", "b"],
        ["ollama", "create", "w", "-f", "M"],
    ]
