"""endoview's PySide6 viewer: a thin GUI over engine/ (no model or video logic of its own)."""
