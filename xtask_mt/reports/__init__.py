"""Readable results: the sweep report, the evaluation text, and Delta_m."""
