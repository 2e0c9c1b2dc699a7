"""The meta-predictor: a deep ensemble of small MLPs scoring (arch features, task embedding) pairs.

Search only needs the *order* of candidates within one task, so members are trained
with a pairwise logistic (RankNet) loss on pairs from the same task, plus a small
MSE term on the per-task copula targets that keeps scores on a common scale (so
the ensemble spread is comparable across tasks). Each member has its own seed and
bootstrap resample of the rows within every task; the spread across members is the
uncertainty used by UCB.

Online adaptation (`adapt`) fine-tunes a copy on the target task's own evaluations
as they arrive. The task embedding already conditions the model on the anchors, but
it is a fixed-size summary learned from other tasks; when the target behaves unlike
any source task (or the sources mislead) only the target's own data can correct
the ranking, and a few small-lr pairwise steps from the meta-trained weights do
that without forgetting the prior on the first handful of evaluations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from metanas._io import atomic_write_bytes
from metanas.meta.encoding import arch_feature_matrix, copula_normalize, feature_dim
from metanas.space import ArchConfig, SearchSpace

FORMAT = "metanas.meta_predictor"
FORMAT_VERSION = 1
_HYPERPARAMS = ("n_members", "hidden", "n_layers", "lr", "weight_decay", "pairs_per_row", "mse_weight")


def ucb(mean: np.ndarray, std: np.ndarray, beta: float) -> np.ndarray:
    """Upper confidence bound `mean + beta * std`: beta > 0 favours candidates the ensemble disagrees on."""
    return np.asarray(mean) + beta * np.asarray(std)


def params_proxy(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """Baseline score: log parameter count (bigger is predicted better); any predictor must beat it."""
    return np.log(np.array([space.params(a) for a in archs], dtype=float))


class _EnsembleMLP(nn.Module):
    """`n_members` independent MLPs evaluated together with batched matmuls (one weight slice per member)."""

    def __init__(self, n_members: int, in_dim: int, hidden: int, n_layers: int, generator: torch.Generator) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * n_layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / max(1, fan_in) ** 0.5  # nn.Linear's default init, drawn per member
            w = (torch.rand(n_members, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(n_members, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_dim) -> (n_members, n) scores."""
        h = x.unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.nn.functional.silu(h)
        return h.squeeze(-1)


def _as_2d(name: str, x: np.ndarray | Sequence[Any]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


class MetaPredictor:
    """Deep ensemble over (arch features, task embedding) -> (mean, std) of the per-task copula score.

    Hyperparameters: `n_members` MLPs with `n_layers` hidden layers of `hidden`
    units, Adam with `lr` and `weight_decay`, `pairs_per_row` sampled same-task
    pairs per row and step, `mse_weight` for the copula MSE term. `encoding`
    records how the features were computed (max_layers, seq_len, anchor k/seed) so
    a loaded predictor can encode new archs the same way; `card` is the model card.
    """

    def __init__(
        self,
        n_members: int = 5,
        hidden: int = 64,
        n_layers: int = 2,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        pairs_per_row: int = 8,
        mse_weight: float = 0.1,
        encoding: Mapping[str, Any] | None = None,
    ) -> None:
        if n_members < 1 or hidden < 1 or n_layers < 1 or pairs_per_row < 1:
            raise ValueError("MetaPredictor: n_members, hidden, n_layers and pairs_per_row must be >= 1")
        self.n_members = n_members
        self.hidden = hidden
        self.n_layers = n_layers
        self.lr = lr
        self.weight_decay = weight_decay
        self.pairs_per_row = pairs_per_row
        self.mse_weight = mse_weight
        self.encoding: dict[str, Any] = dict(encoding or {})
        self.card: dict[str, Any] = {}
        self.arch_dim: int | None = None
        self.task_dim: int | None = None
        self._net: _EnsembleMLP | None = None
        self._x_mean: torch.Tensor | None = None
        self._x_std: torch.Tensor | None = None

    # ----- helpers ----------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._net is not None

    def _config(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in _HYPERPARAMS},
            "arch_dim": self.arch_dim,
            "task_dim": self.task_dim,
            "encoding": self.encoding,
        }

    def _inputs(self, X_arch: np.ndarray, X_task: np.ndarray) -> torch.Tensor:
        """Check dims against the fitted model and standardize with the training statistics."""
        xa = _as_2d("X_arch", X_arch)
        xt = _as_2d("X_task", X_task)
        if xa.shape[0] != xt.shape[0]:
            raise ValueError(f"X_arch has {xa.shape[0]} rows but X_task has {xt.shape[0]}")
        if (xa.shape[1], xt.shape[1]) != (self.arch_dim, self.task_dim):
            raise ValueError(
                f"feature dims ({xa.shape[1]} arch, {xt.shape[1]} task) do not match the predictor's "
                f"({self.arch_dim} arch, {self.task_dim} task)"
            )
        x = torch.from_numpy(np.concatenate([xa, xt], axis=1))
        return (x - self._x_mean) / self._x_std

    def _train(
        self,
        x: torch.Tensor,
        y: np.ndarray,
        groups: np.ndarray,
        steps: int,
        lr: float,
        seed: int,
        callback: Callable[[int, MetaPredictor], None] | None = None,
    ) -> None:
        """Full-batch Adam steps on the pairwise + MSE loss, each member on its own bootstrap and pairs."""
        assert self._net is not None
        if steps <= 0:
            return
        rng = np.random.default_rng(seed)
        n, e = len(y), self.n_members
        _, g = np.unique(groups, return_inverse=True)
        order = np.argsort(g, kind="stable")
        counts = np.bincount(g)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Bootstrap within each task: member m sees row r weight[m, r] times.
        weight = np.zeros((e, n))
        for m in range(e):
            for t in range(len(counts)):
                rows = order[starts[t] : starts[t] + counts[t]]
                weight[m] += np.bincount(rng.choice(rows, size=counts[t]), minlength=n)
        w = torch.from_numpy(weight).float()
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
        left = np.tile(np.arange(n), self.pairs_per_row)
        # Everything about the left rows is fixed for the whole run: only the partners are redrawn.
        left_start, left_count = starts[g[left]], counts[g[left]]
        left_t = torch.from_numpy(left)
        left_members = left_t.expand(e, -1)
        y_left, w_left, w_rows = yt[left_t], w[:, left_t], w.sum(1)
        opt = torch.optim.Adam(self._net.parameters(), lr=lr, weight_decay=self.weight_decay)
        for step in range(1, steps + 1):
            # Partner of each left row: a random row of the same task, drawn per member.
            u = rng.random((e, left.size))
            right_t = torch.from_numpy(order[left_start + np.floor(u * left_count).astype(np.int64)])
            s = self._net(x)
            s_left = s.gather(1, left_members)
            s_right = s.gather(1, right_t)
            sign = torch.sign(y_left - yt[right_t])
            pw = w_left * w.gather(1, right_t) * (sign != 0)
            pair = (pw * nn.functional.softplus(-sign * (s_left - s_right))).sum(1) / pw.sum(1).clamp_min(1.0)
            mse = (w * (s - yt) ** 2).sum(1) / w_rows
            loss = (pair + self.mse_weight * mse).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if callback is not None:
                callback(step, self)

    # ----- training -----------------------------------------------------------
    def fit(
        self,
        X_arch: np.ndarray,
        X_task: np.ndarray,
        y: np.ndarray | Sequence[float],
        task_ids: Sequence[Any] | np.ndarray,
        epochs: int = 300,
        seed: int = 0,
        callback: Callable[[int, MetaPredictor], None] | None = None,
    ) -> MetaPredictor:
        """Train a fresh ensemble; returns self.

        `y` is fitness (higher is better), copula-normalized here per task (a no-op
        on targets already normalized that way); pairs only ever join rows of the
        same `task_ids` value. One epoch is one full-batch step; `callback(epoch,
        self)` runs after each, e.g. to score held-out tasks for model selection.
        """
        xa = _as_2d("X_arch", X_arch)
        xt = _as_2d("X_task", X_task)
        groups = np.asarray(task_ids)
        yv = np.asarray(y, dtype=float)
        if not (xa.shape[0] == xt.shape[0] == yv.shape[0] == groups.shape[0]):
            raise ValueError(
                f"fit: X_arch, X_task, y and task_ids need the same number of rows, got "
                f"{xa.shape[0]}, {xt.shape[0]}, {yv.shape[0]}, {groups.shape[0]}"
            )
        if xa.shape[0] == 0:
            raise ValueError("fit: no training rows")
        if epochs < 0:
            raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
        target = np.zeros(yv.shape[0])
        for t in np.unique(groups):
            rows = groups == t
            target[rows] = copula_normalize(yv[rows])
        self.arch_dim, self.task_dim = xa.shape[1], xt.shape[1]
        x = torch.from_numpy(np.concatenate([xa, xt], axis=1))
        self._x_mean = x.mean(0)
        std = x.std(0, unbiased=False)
        self._x_std = torch.where(std > 1e-6, std, torch.ones_like(std))
        torch_gen = torch.Generator().manual_seed(seed)
        self._net = _EnsembleMLP(self.n_members, x.shape[1], self.hidden, self.n_layers, torch_gen)
        self._train((x - self._x_mean) / self._x_std, target, groups, epochs, self.lr, seed, callback)
        return self

    def adapt(
        self,
        X_arch: np.ndarray,
        X_task: np.ndarray,
        y_target: np.ndarray | Sequence[float],
        steps: int = 50,
        lr: float = 2e-3,
        seed: int = 0,
    ) -> MetaPredictor:
        """A copy fine-tuned on the target task's own evaluations (pairwise loss, lr below fit's); self is unchanged.

        `y_target` is the target's fitness (higher is better), all from one task.
        With fewer than two distinct values there is nothing to rank and the copy is
        returned as is.
        """
        self._require_fitted("adapt")
        x = self._inputs(X_arch, X_task)
        yv = np.asarray(y_target, dtype=float)
        if yv.shape != (x.shape[0],):
            raise ValueError(f"adapt: y_target needs one value per row ({x.shape[0]}), got shape {yv.shape}")
        new = copy.deepcopy(self)
        if len(np.unique(yv)) < 2:
            return new
        new._train(x, copula_normalize(yv), np.zeros(len(yv), dtype=np.int64), steps, lr, seed)
        return new

    # ----- inference -------------------------------------------------------------
    def encode_archs(self, space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Arch features with the encoding this predictor was trained with."""
        return arch_feature_matrix(space, archs, int(self.encoding["seq_len"]), int(self.encoding["max_layers"]))

    def target_only(self) -> TargetOnlyPredictor:
        """An untrained target-only model with this one's architecture and optimizer: it differs only in data."""
        return TargetOnlyPredictor(**{k: getattr(self, k) for k in _HYPERPARAMS})

    def _require_fitted(self, what: str) -> None:
        if not self.fitted:
            raise RuntimeError(f"MetaPredictor.{what}: the predictor is not trained; call fit() or load() first")

    def predict(self, X_arch: np.ndarray, X_task: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and std of the copula-scale score per row (higher is better)."""
        self._require_fitted("predict")
        assert self._net is not None
        with torch.no_grad():
            s = self._net(self._inputs(X_arch, X_task)).double().numpy()
        return s.mean(0), s.std(0)

    def rank_score(self, X_arch: np.ndarray, X_task: np.ndarray, beta: float = 0.0) -> np.ndarray:
        """Score to sort candidates by (higher first): the UCB `mean + beta * std`; beta=0 ranks by the mean."""
        mean, std = self.predict(X_arch, X_task)
        return ucb(mean, std, beta)

    # ----- persistence -------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        assert self._net is not None and self._x_mean is not None and self._x_std is not None
        out = {"x_mean": self._x_mean, "x_std": self._x_std}
        for i, (w, b) in enumerate(zip(self._net.weights, self._net.biases)):
            out[f"w{i}"] = w.detach()
            out[f"b{i}"] = b.detach()
        return {k: v.contiguous().float() for k, v in out.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file: weights plus format, version, config, card and a checksum as metadata."""
        self._require_fitted("save")
        tensors = self._tensors()
        meta = {
            "format": FORMAT,
            "version": str(FORMAT_VERSION),
            "config": json.dumps(self._config(), sort_keys=True),
            "card": json.dumps(self.card, sort_keys=True, default=str),
            "sha256": _checksum(tensors),
        }
        return atomic_write_bytes(safetensors_bytes(tensors, metadata=meta), path)

    @classmethod
    def load(cls, path: str | os.PathLike, task_dim: int | None = None) -> MetaPredictor:
        """Read a file written by `save`; a wrong format version, feature dim or a damaged file raises ValueError.

        The arch dim is checked against this metanas's `feature_dim(max_layers)` when
        the file records its encoding (files from `meta_train` do); `task_dim`, when
        given, must match the file's (it is fixed by the anchor count).
        """
        where = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"predictor file {where} does not exist")
        try:
            with safe_open(where, framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"predictor file {where} is damaged or not a safetensors file ({e})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{where} is not a metanas meta-predictor file (format {meta.get('format')!r})")
        if meta.get("version") != str(FORMAT_VERSION):
            raise ValueError(
                f"predictor file {where} is from format version {meta.get('version')}, "
                f"this metanas reads version {FORMAT_VERSION}; retrain it with `metanas meta-train`"
            )
        if meta.get("sha256") != _checksum(tensors):
            raise ValueError(f"predictor file {where} is damaged: its weights do not match the stored checksum")
        try:
            config = json.loads(meta["config"])
            card = json.loads(meta["card"])
            p = cls(**{k: config[k] for k in _HYPERPARAMS}, encoding=config["encoding"])
            p.arch_dim, p.task_dim = int(config["arch_dim"]), int(config["task_dim"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"predictor file {where} has damaged metadata ({type(e).__name__}: {e})") from None
        encoding = p.encoding
        if "max_layers" in encoding and p.arch_dim != feature_dim(encoding["max_layers"]):
            raise ValueError(
                f"predictor file {where} expects {p.arch_dim} arch features, but this metanas encodes "
                f"archs in {feature_dim(encoding['max_layers'])} (max_layers={encoding['max_layers']}); retrain it"
            )
        if task_dim is not None and p.task_dim != task_dim:
            raise ValueError(
                f"predictor file {where} expects {p.task_dim} task-embedding features, got {task_dim} "
                "(a different number of anchors?)"
            )
        p.card = card
        dim = p.arch_dim + p.task_dim
        net = _EnsembleMLP(p.n_members, dim, p.hidden, p.n_layers, torch.Generator())
        params = {f"w{i}": w for i, w in enumerate(net.weights)} | {f"b{i}": b for i, b in enumerate(net.biases)}
        shapes = {"x_mean": (dim,), "x_std": (dim,)} | {name: tuple(t.shape) for name, t in params.items()}
        if set(tensors) != set(shapes):
            raise ValueError(f"predictor file {where} holds tensors {sorted(tensors)}, expected {sorted(shapes)}")
        for name, shape in shapes.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"predictor file {where}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                    f"its config implies {shape}"
                )
        for name, param in params.items():
            param.data.copy_(tensors[name])
        p._net = net
        p._x_mean, p._x_std = tensors["x_mean"], tensors["x_std"]
        return p


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and bytes: safetensors itself would not notice flipped weight bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().float()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class TargetOnlyPredictor:
    """The same ensemble trained only on the target task's evaluations: the no-transfer baseline."""

    def __init__(self, **kwargs: Any) -> None:
        self._model = MetaPredictor(**kwargs)

    def fit(
        self, X_arch: np.ndarray, y: np.ndarray | Sequence[float], epochs: int = 300, seed: int = 0
    ) -> TargetOnlyPredictor:
        """Train on one task's rows (fitness, higher is better); returns self."""
        xa = _as_2d("X_arch", X_arch)
        self._model.fit(xa, np.zeros((xa.shape[0], 0), dtype=np.float32), y, np.zeros(xa.shape[0]), epochs, seed)
        return self

    def predict(self, X_arch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and std per row."""
        xa = _as_2d("X_arch", X_arch)
        return self._model.predict(xa, np.zeros((xa.shape[0], 0), dtype=np.float32))

    def rank_score(self, X_arch: np.ndarray, beta: float = 0.0) -> np.ndarray:
        """UCB score to sort candidates by."""
        return ucb(*self.predict(X_arch), beta)
