"""Thin Qt item models over core collections (one per collection)."""
