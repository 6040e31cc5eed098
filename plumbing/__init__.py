"""The plumbing both command lines use, holding no rule of the contract: atomic output files, JSON lines,
the optional extras a verb needs, and the error boundary that turns an expected failure into one line.

It imports nothing of ours beyond itself (tests/test_import_graph.py)."""
