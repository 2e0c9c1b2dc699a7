"""Meta-learning across searches: what earlier searches teach a new one.

- `history`: the evaluation history store (SQLite by default, any SQLAlchemy URL);
- `encoding`: arch and task features shared by every space and task;
- `anchors`: the fixed anchor archs that fingerprint a task;
- `predictor`: `MetaPredictor`, the ensemble that ranks archs for a task;
- `metatrain`: training it on the history (and the augmentation it uses);
- `choice`: which predictor file a warm-started search uses (`auto`, `off`, PATH).

The warm-started search itself is `metanas.search.warm`.
"""

from metanas.meta.history import ORIGINS, RUN_STATUSES, EvalRecord, HistoryStore

__all__ = ["ORIGINS", "RUN_STATUSES", "EvalRecord", "HistoryStore"]
