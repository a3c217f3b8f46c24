"""Metrics, JSON logs, the prediction log, and the fleet's view of both (``/stats``, the
gateway's own answers)."""
