"""Ollama Modelfiles: write them for the writer prompt, check them against Ollama's grammar, publish them."""
