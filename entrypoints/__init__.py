"""Entrypoints: the CLI, the ASGI app, and the one composition root (bootstrap)."""
