"""The bot's ratings as training data (export.py) and as figures (stats.py), read from its SQLite file."""
