"""The model runtime: manifests, verified archives, the repository and its sources (import,
MLflow), input validation, dynamic batching, torch execution and ``PredictionService``."""
