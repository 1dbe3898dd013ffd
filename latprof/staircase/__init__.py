"""Staircases: the step fitter, fitted lines of a table, step tables, and the channel options they give a pruner."""
