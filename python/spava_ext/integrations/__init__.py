"""Integrations with model libraries (import them explicitly: they need the library)."""
