"""Fine-tuning: QLoRA SFT on writer rows, DPO / KTO on feedback, to a PEFT adapter folder.

rows.py (read, check, fit and tokenize rows), base.py (hardware, chat format, loading), sft.py and
preference.py (the TRL trainers), callbacks.py (loss log + curve, Ctrl-C), outputs.py (the output
folder and checkpoints), run.py (one run end to end), commands.py (`story-pipeline train`).
"""
