"""Ollama's Modelfile language as Ollama reads it: the parser and checker (grammar), Go's string and
template rules it depends on (golang, gotemplate), and what a FROM or ADAPTER file is (inspect)."""
