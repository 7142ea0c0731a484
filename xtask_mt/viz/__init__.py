"""Figures as PNG files: per-sample panels and per-class IoU charts (arrays in, files out)."""
