"""What the pipeline and the bot share, owned by neither: the rules that must agree on both sides of a
trained model (the writer prompt, chat formats, how a request is built, the Modelfile grammar, the
store's schema) and the plumbing both command lines use (atomic files, JSON lines, the error boundary,
the optional extras, the in-process llama.cpp engine and the small real model).

`pipeline` and `bot` import this package and never each other; `demo` is the one package over both."""
