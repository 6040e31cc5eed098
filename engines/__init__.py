"""What runs a model on this machine without a server: the in-process llama.cpp engine that answers the
contract's requests as Ollama does (local_engine), and the small real model it runs in the tests and the
demo (smollm2).

It builds on `contract` and `plumbing`; `pipeline` and `bot` use it (tests/test_import_graph.py)."""
