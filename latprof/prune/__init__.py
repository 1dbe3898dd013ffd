"""Pruning: channel coupling (graph), importance, the latency model, surgery and the prune pipeline."""
