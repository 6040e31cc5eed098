"""The agreements both sides of a trained model must share, owned by neither: the writer prompt, the
chat formats (the base's Jinja template and the Go TEMPLATE derived from it), how a generate request is
built, what a model is trained to write (its target), the Modelfile grammar and the store's schema.

It imports only `plumbing`; `engines`, `pipeline` and `bot` build on it (tests/test_import_graph.py)."""
