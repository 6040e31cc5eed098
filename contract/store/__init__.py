"""The bot's database as both sides read it: the schema and its migrations, and the SQLite/PostgreSQL
connection details (engine). The bot writes it; the pipeline's feedback export reads a snapshot."""
