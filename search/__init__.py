"""Channel-count searchers and importance criteria (plug-ins keyed by name)."""
