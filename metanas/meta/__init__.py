"""Meta-learning across searches: the evaluation history store (more to come: encodings, predictor)."""

from metanas.meta.history import ORIGINS, RUN_STATUSES, EvalRecord, HistoryStore

__all__ = ["ORIGINS", "RUN_STATUSES", "EvalRecord", "HistoryStore"]
