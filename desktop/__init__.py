"""Hearth's desktop app (PySide6): views and thin Qt models over ``core``."""
