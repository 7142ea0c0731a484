"""Figures as PNG files: per-sample panels and per-class IoU charts (arrays in, files out),
and the one colour scale for value maps that every figure and tracker image uses."""
