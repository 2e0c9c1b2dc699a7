"""The negative-transfer guard of a warm-started search.

Every generation it compares the predictor's ranking of the freshly evaluated
archs (predictions made before they were evaluated) with a parameter-count proxy;
after `patience` losses in a row the search falls back to a target-only predictor,
and to plain evolution when that one ranks below `plain_tau`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau

MODES = ("meta", "target", "proxy", "evolution")


def kendall(scores: Sequence[float] | np.ndarray, fitness: Sequence[float] | np.ndarray) -> float:
    """Kendall tau of scores against fitness over finite fitness values; 0 where undefined (too few, constant)."""
    s, f = np.asarray(scores, dtype=float), np.asarray(fitness, dtype=float)
    keep = np.isfinite(f) & np.isfinite(s)
    if keep.sum() < 3:
        return 0.0
    tau = kendalltau(s[keep], f[keep]).statistic
    return 0.0 if np.isnan(tau) else float(tau)


class TransferGuard:
    """Watches the ranking quality of the predictor a search relies on, and falls back when it fails.

    Modes: `meta` (the adapted meta-predictor ranks candidates), `target` (a model
    trained on the target's evaluations only) and `evolution` (no predictor). After
    each predictor-driven generation, `update` receives the predictions made for the
    generation's archs before they were evaluated, their fitness and the params
    proxy. In `meta` mode a generation where the predictor's Kendall tau is below
    the proxy's is a loss; `patience` losses in a row switch to `target` when the
    target-only model's tau on the same generation is at least `plain_tau`, else to
    `evolution`. In `target` mode, `patience` generations in a row with the
    target-only tau below `plain_tau` switch to `evolution`. Fallbacks are final:
    transfer that failed twice is not trusted again within a search. `proxy` (the
    params-proxy baseline) is never switched: there is nothing better to fall back to,
    and `update` only logs the proxy's tau.
    """

    def __init__(self, patience: int = 2, plain_tau: float = 0.1) -> None:
        if patience < 1:
            raise ValueError(f"TransferGuard: patience must be >= 1, got {patience}")
        self.patience = patience
        self.plain_tau = plain_tau
        self.mode = "meta"
        self.strikes = 0

    @property
    def wants_target_model(self) -> bool:
        """True when the next update may need the target-only model's tau (it runs in that mode or may switch)."""
        return self.mode == "target" or (self.mode == "meta" and self.strikes >= self.patience - 1)

    def update(
        self,
        generation: int,
        fitness: Sequence[float],
        proxy: Sequence[float],
        meta_pred: Sequence[float] | None,
        target_pred: Sequence[float] | None,
    ) -> dict[str, Any]:
        """Judge one generation; returns the logged decision (mode before/after, the three taus, strikes)."""
        tau_proxy = kendall(proxy, fitness)
        tau_meta = kendall(meta_pred, fitness) if meta_pred is not None else None
        tau_target = kendall(target_pred, fitness) if target_pred is not None else None
        before = self.mode
        decision = "keep"
        if self.mode == "meta" and tau_meta is not None:
            self.strikes = self.strikes + 1 if tau_meta < tau_proxy else 0
            if self.strikes >= self.patience:
                self.mode = "target" if tau_target is not None and tau_target >= self.plain_tau else "evolution"
                self.strikes = 0
                decision = f"fallback:{self.mode}"
        elif self.mode == "target":
            self.strikes = self.strikes + 1 if tau_target is None or tau_target < self.plain_tau else 0
            if self.strikes >= self.patience:
                self.mode, self.strikes, decision = "evolution", 0, "fallback:evolution"
        return {
            "generation": generation,
            "event": "guard",
            "mode": before,
            "next_mode": self.mode,
            "decision": decision,
            "n": int(np.isfinite(np.asarray(fitness, dtype=float)).sum()),
            "tau_predictor": tau_meta,
            "tau_target_only": tau_target,
            "tau_params_proxy": tau_proxy,
            "strikes": self.strikes,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "strikes": self.strikes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["mode"] not in MODES:
            raise ValueError(f"TransferGuard: unknown mode {state['mode']!r}")
        self.mode = str(state["mode"])
        self.strikes = int(state["strikes"])
