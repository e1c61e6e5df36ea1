"""Prefect flows and thin tasks that call genimg functions (no model logic lives here)."""
