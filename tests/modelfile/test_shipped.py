"""The shipped Modelfiles (modelfiles/) are what `story-pipeline modelfile` writes today from each family's
real chat template, byte for byte: regenerated here, so none can drift from the code or the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract import chat_template
from contract.modelfile import grammar
from pipeline.modelfile import render
from tests.families import BY_NAME

SHIPPED = Path(__file__).resolve().parents[2] / "modelfiles"
# file -> (FROM, family): the write-up's student, CRA-v1, and one current family of each kind
MODELFILES = {
    "deepseek-r1-1.5b-writer.Modelfile": ("deepseek-r1:1.5b", "deepseek-r1-distill-qwen"),
    "qwen2.5-7b-writer.Modelfile": ("qwen2.5:7b-instruct", "qwen2.5"),
    "cra-v1-7b-writer.Modelfile": ("molbal/cra-v1-7b", "qwen2.5"),
    "qwen3-8b-writer.Modelfile": ("qwen3:8b", "qwen3"),
    "llama3.1-8b-writer.Modelfile": ("llama3.1:8b", "llama3.1"),
    "mistral-nemo-12b-writer.Modelfile": ("mistral-nemo:12b", "mistral-nemo"),
    "gemma2-9b-writer.Modelfile": ("gemma2:9b", "gemma2"),
    "phi3.5-3.8b-writer.Modelfile": ("phi3.5:3.8b", "phi3.5"),
}


def test_every_shipped_modelfile_is_listed():
    assert sorted(p.name for p in SHIPPED.glob("*.Modelfile")) == sorted(MODELFILES)


@pytest.mark.parametrize("name", sorted(MODELFILES))
def test_a_shipped_modelfile_is_what_the_writer_writes(tmp_path, monkeypatch, name):
    base, family = MODELFILES[name]
    shipped = (SHIPPED / name).read_text(encoding="utf-8")
    carried = chat_template.decode(grammar.parse(shipped).first("template"))
    assert carried is not None and carried == BY_NAME[family].template(carried.date)
    (tmp_path / "modelfiles").mkdir()
    monkeypatch.chdir(tmp_path)  # the header names the file as the command was given it
    path, problems = render.write(Path("modelfiles") / name, base, template=carried)
    assert problems == [] and path.read_text(encoding="utf-8") == shipped
