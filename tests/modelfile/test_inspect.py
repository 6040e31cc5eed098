"""Reading a GGUF's metadata: once per file and version, whichever check asks."""

from __future__ import annotations

import gguf

from contract.modelfile import inspect
from tests.modelfile.conftest import write_gguf


def test_a_gguf_is_read_once_until_it_changes(gguf_file, monkeypatch):
    reads = []
    real = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda path: reads.append(path) or real(path))
    inspect._gguf_fields.cache_clear()
    path = gguf_file("model.gguf", kind="model")

    assert inspect.architecture_of(path) == "qwen2"
    assert inspect.local_chat_template(path) == (None, "", "")
    fields = inspect.gguf_fields(path)
    fields.clear()  # a caller's copy: the next reader still sees the file's fields
    assert inspect.gguf_fields(path)["general.type"] == "model"
    assert len(reads) == 1

    write_gguf(path, arch="llama", kind="model")  # rewritten in place: another size, another time
    assert inspect.architecture_of(path) == "llama"
    assert len(reads) == 2
