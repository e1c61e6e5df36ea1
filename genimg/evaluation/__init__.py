"""Evaluation: sample grids and animations (metrics and reports build on these)."""
