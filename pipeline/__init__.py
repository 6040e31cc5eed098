"""The story pipeline: books and prompts to training rows, QLoRA fine-tuning, GGUF export, Modelfiles,
publishing to Ollama, evaluation and feedback. Heavy libraries are imported only inside the commands that
need them, so importing this package (and `contract.prompt`) stays light."""
