"""Search space and architecture configs for elastic BERT-like supernets.

An `ArchConfig` names one subnet: its depth, which of the teacher's layers it keeps
(the first `depth`, or `depth` spread evenly over the teacher ending at its last layer),
the shared hidden size, and per-layer attention heads and FFN sizes. A `SearchSpace` holds the allowed choices (derived
from a teacher config) plus the fixed teacher dimensions needed to count
parameters and FLOPs exactly by formula, so costs never require building a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

RngLike = random.Random | int | None

# Fractions of the teacher's sizes used when the caller gives no explicit choices.
DEFAULT_HIDDEN_FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)
DEFAULT_HEAD_FRACTIONS = (1 / 3, 0.5, 2 / 3, 5 / 6, 1.0)
DEFAULT_FFN_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_MIN_DEPTH_FRACTION = 1 / 3
# Which teacher layers a subnet of depth k keeps: "first" (layers 0..k-1, the prefix every
# weight-sharing NAS uses) or "spread" (k layers evenly spaced, always ending at the teacher's
# last layer: DistilBERT's every-other-layer initialisation when k is half the depth).
LAYER_SELECTIONS = ("first", "spread")


def _as_rng(rng: RngLike) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _ints(name: str, values: Iterable[Any]) -> tuple[int, ...]:
    values = tuple(values)
    if all(type(v) is int and v >= 1 for v in values):  # the common case, checked without a loop body
        return values
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: every value must be a positive integer, got {v!r}")
        out.append(v)
    return tuple(out)


def layer_indices(selection: str, depth: int, teacher_depth: int) -> tuple[int, ...]:
    """The teacher layers (0-based, increasing) that a subnet of `depth` layers keeps.

    "spread" takes layer floor((i + 1) * L / k) - 1 for i < k: [1, 3, 5] for 3 of 6 layers,
    [0, 2, 3, 5] for 4 of 6, every layer for k == L; the last layer is always kept because
    the teacher's output representation is what the student is asked to reproduce.
    """
    if not 1 <= depth <= teacher_depth:
        raise ValueError(f"layer_indices: depth must be in [1, {teacher_depth}], got {depth}")
    if selection == "first":
        return tuple(range(depth))
    if selection == "spread":
        return tuple((i + 1) * teacher_depth // depth - 1 for i in range(depth))
    raise ValueError(f"layer_selection={selection!r} is unknown; allowed: {list(LAYER_SELECTIONS)}")


@dataclass(frozen=True)
class ArchConfig:
    """One subnet: `depth` layers chosen by `layer_selection`, `hidden` width, per-layer `heads` and `ffn`.

    `heads[i]` / `ffn[i]` size the i-th *kept* layer. The default selection "first" is
    left out of `to_dict`, so archs (and their hashes) from before layer selection existed
    read and compare unchanged.
    """

    depth: int
    hidden: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    layer_selection: str = "first"

    def __post_init__(self) -> None:
        if self.layer_selection not in LAYER_SELECTIONS:
            raise ValueError(
                f"ArchConfig.layer_selection={self.layer_selection!r} is unknown; allowed: {list(LAYER_SELECTIONS)}"
            )
        for name in ("depth", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ArchConfig.{name}: must be a positive integer, got {v!r}")
        object.__setattr__(self, "heads", _ints("ArchConfig.heads", self.heads))
        object.__setattr__(self, "ffn", _ints("ArchConfig.ffn", self.ffn))
        for name in ("heads", "ffn"):
            if len(getattr(self, name)) != self.depth:
                raise ValueError(
                    f"ArchConfig.{name}: needs one value per layer ({self.depth}), got {len(getattr(self, name))}"
                )

    @property
    def is_uniform(self) -> bool:
        """True when every layer has the same heads and FFN size."""
        return len(set(self.heads)) <= 1 and len(set(self.ffn)) <= 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "depth": self.depth,
            "hidden": self.hidden,
            "heads": list(self.heads),
            "ffn": list(self.ffn),
        }
        if self.layer_selection != "first":
            d["layer_selection"] = self.layer_selection
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        if not isinstance(data, dict):
            raise ValueError(f"ArchConfig: expected a JSON object, got {type(data).__name__}")
        expected = {"depth", "hidden", "heads", "ffn"}
        unknown = set(data) - expected - {"layer_selection"}
        missing = expected - set(data)
        if unknown or missing:
            raise ValueError(
                f"ArchConfig: keys must be {sorted(expected)} (and optionally 'layer_selection'); "
                f"unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(
            depth=data["depth"],
            hidden=data["hidden"],
            heads=tuple(data["heads"]),
            ffn=tuple(data["ffn"]),
            layer_selection=data.get("layer_selection", "first"),
        )

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ArchConfig: not valid JSON ({e})") from None
        return cls.from_dict(data)


def _fraction_choices(full: int, fractions: Sequence[float], multiple: int = 1) -> tuple[int, ...]:
    values = set()
    for f in fractions:
        v = int(round(full * f / multiple)) * multiple
        values.add(min(full, max(multiple, v)))
    values.add(full)
    return tuple(sorted(values))


@dataclass(frozen=True)
class SearchSpace:
    """Choices per elastic dimension plus the fixed dimensions of the teacher.

    `embedding_size` is set for ELECTRA-style models whose embeddings are narrower
    than the hidden size (a projection maps them up); it is None otherwise, and
    then the embeddings share the elastic hidden size.
    """

    depth_choices: tuple[int, ...]
    hidden_choices: tuple[int, ...]
    head_choices: tuple[int, ...]
    ffn_choices: tuple[int, ...]
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    embedding_size: int | None = None
    has_pooler: bool = True
    model_type: str = "bert"
    layer_selection_choices: tuple[str, ...] = ("first",)

    def __post_init__(self) -> None:
        for name in ("depth_choices", "hidden_choices", "head_choices", "ffn_choices"):
            values = _ints(f"SearchSpace.{name}", getattr(self, name))
            if not values:
                raise ValueError(f"SearchSpace.{name}: needs at least one choice")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        selections = tuple(self.layer_selection_choices)
        bad = [v for v in selections if v not in LAYER_SELECTIONS]
        if bad or not selections:
            raise ValueError(
                f"SearchSpace.layer_selection_choices: {list(selections)} must be a non-empty subset of "
                f"{list(LAYER_SELECTIONS)}"
            )
        object.__setattr__(self, "layer_selection_choices", tuple(v for v in LAYER_SELECTIONS if v in selections))
        for name in ("head_dim", "vocab_size", "max_position_embeddings"):
            _ints(f"SearchSpace.{name}", [getattr(self, name)])

    # ----- construction -------------------------------------------------
    @classmethod
    def from_teacher_config(cls, config: Any, **overrides: Any) -> SearchSpace:
        """Derive default choices from a Hugging Face config; `overrides` replace any field.

        Defaults: depth from a third of the layers up to all of them; hidden at
        50..100% in steps of 12.5% (multiples of 8); heads at 1/3..all; FFN at
        25..100%. The largest choice of each dimension is always the teacher's.
        """
        layers = config.num_hidden_layers
        hidden = config.hidden_size
        heads = config.num_attention_heads
        head_dim = hidden // heads
        ffn = config.intermediate_size
        min_depth = max(1, math.ceil(layers * DEFAULT_MIN_DEPTH_FRACTION))
        emb = getattr(config, "embedding_size", None)
        values: dict[str, Any] = {
            "depth_choices": tuple(range(min_depth, layers + 1)),
            "hidden_choices": _fraction_choices(hidden, DEFAULT_HIDDEN_FRACTIONS, 8 if hidden >= 64 else 1),
            "head_choices": _fraction_choices(heads, DEFAULT_HEAD_FRACTIONS),
            "ffn_choices": _fraction_choices(ffn, DEFAULT_FFN_FRACTIONS, 8 if ffn >= 64 else 1),
            "head_dim": head_dim,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": config.type_vocab_size,
            "embedding_size": emb if emb is not None and emb != hidden else None,
            "has_pooler": config.model_type != "electra",
            "model_type": config.model_type,
            "layer_selection_choices": ("first",),
        }
        allowed = set(values)
        for key in overrides:
            if key not in allowed:
                raise ValueError(f"SearchSpace override {key!r} is unknown; allowed: {sorted(allowed)}")
        values.update(overrides)
        space = cls(**values)
        teacher = {"depth_choices": layers, "hidden_choices": hidden, "head_choices": heads, "ffn_choices": ffn}
        for name, top in teacher.items():
            if max(getattr(space, name)) > top:
                raise ValueError(f"SearchSpace.{name}: {max(getattr(space, name))} exceeds the teacher's {top}")
        return space

    def check_slices(self, config: Any) -> None:
        """Raise unless the largest arch is `config`'s teacher: a supernet holds the teacher's weights, and
        every other arch is a slice of them."""
        teacher = {
            "depth_choices": config.num_hidden_layers,
            "hidden_choices": config.hidden_size,
            "head_choices": config.num_attention_heads,
            "ffn_choices": config.intermediate_size,
        }
        for name, top in teacher.items():
            if max(getattr(self, name)) != top:
                raise ValueError(
                    f"space.{name}: the largest choice must be the teacher's {top} (the largest arch is the teacher, "
                    f"every other arch a slice of it); got {list(getattr(self, name))}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON; the default layer selection (first k only) is left out, so the
        signature of every space from before layer selection existed is unchanged."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        if self.layer_selection_choices == ("first",):
            del d["layer_selection_choices"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        data = dict(data)
        for k in ("depth_choices", "hidden_choices", "head_choices", "ffn_choices", "layer_selection_choices"):
            if k in data:
                data[k] = tuple(data[k])
        return cls(**data)

    def signature(self) -> str:
        """Stable short hash naming this space, so records of different spaces never mix."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # ----- membership ---------------------------------------------------
    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @cached_property
    def runnable(self) -> SearchSpace:
        """The archs a supernet of this space can run and export: this space's widths at any depth up to
        the largest, with either layer selection (its weights hold every layer). Baselines outside the
        searched space, such as DistilBERT's every-other-layer, are members."""
        return replace(
            self, depth_choices=tuple(range(1, self.max_depth + 1)), layer_selection_choices=LAYER_SELECTIONS
        )

    def layer_indices(self, arch: ArchConfig) -> tuple[int, ...]:
        """The supernet layers `arch` runs, in order (see `layer_indices`)."""
        return layer_indices(arch.layer_selection, arch.depth, self.max_depth)

    def canonical(self, arch: ArchConfig) -> ArchConfig:
        """`arch` with selection "first" when its selection keeps the same layers (every layer kept),
        so one subnet has one name."""
        if arch.layer_selection != "first" and self.layer_indices(arch) == tuple(range(arch.depth)):
            return ArchConfig(arch.depth, arch.hidden, arch.heads, arch.ffn)
        return arch

    def validate(self, arch: ArchConfig) -> ArchConfig:
        """Raise `ValueError` naming the field, the value and the allowed values."""
        if not isinstance(arch, ArchConfig):
            raise TypeError(f"expected an ArchConfig, got {type(arch).__name__}")
        if arch.depth not in self.depth_choices:
            raise ValueError(f"arch.depth={arch.depth} is outside the space; allowed: {list(self.depth_choices)}")
        if arch.hidden not in self.hidden_choices:
            raise ValueError(f"arch.hidden={arch.hidden} is outside the space; allowed: {list(self.hidden_choices)}")
        for name, allowed in (("heads", self.head_choices), ("ffn", self.ffn_choices)):
            for i, v in enumerate(getattr(arch, name)):
                if v not in allowed:
                    raise ValueError(f"arch.{name}[{i}]={v} is outside the space; allowed: {list(allowed)}")
        if arch.layer_selection not in self.layer_selection_choices:
            raise ValueError(
                f"arch.layer_selection={arch.layer_selection!r} is outside the space; "
                f"allowed: {list(self.layer_selection_choices)}"
            )
        return arch

    def contains(self, arch: ArchConfig) -> bool:
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    # ----- canonical members --------------------------------------------
    def largest(self) -> ArchConfig:
        d = self.max_depth
        return ArchConfig(d, max(self.hidden_choices), (max(self.head_choices),) * d, (max(self.ffn_choices),) * d)

    def smallest(self) -> ArchConfig:
        d = min(self.depth_choices)
        return ArchConfig(d, min(self.hidden_choices), (min(self.head_choices),) * d, (min(self.ffn_choices),) * d)

    def uniform(self, depth: int, hidden: int, heads: int, ffn: int, layer_selection: str = "first") -> ArchConfig:
        """An arch with the same heads and FFN size in every layer, validated."""
        arch = ArchConfig(depth, hidden, (heads,) * depth, (ffn,) * depth, layer_selection)
        return self.validate(self.canonical(arch))

    def middle(self) -> ArchConfig:
        """The median choice of every dimension, uniform over layers: a fixed mid-size probe."""

        def median(choices: tuple[int, ...]) -> int:
            return choices[len(choices) // 2]

        return self.uniform(
            median(self.depth_choices), median(self.hidden_choices), median(self.head_choices), median(self.ffn_choices)
        )

    def uniform_at(self, fraction: float) -> ArchConfig:
        """Every dimension at the largest choice <= `fraction` of its maximum (its smallest choice at least)."""

        def pick(choices: tuple[int, ...]) -> int:
            fitting = [c for c in choices if c <= fraction * max(choices) + 1e-9]
            return max(fitting) if fitting else min(choices)

        return self.uniform(
            pick(self.depth_choices), pick(self.hidden_choices), pick(self.head_choices), pick(self.ffn_choices)
        )

    def uniform_shrinks(self, feasible: Callable[[ArchConfig], bool]) -> Iterator[tuple[ArchConfig, float]]:
        """Uniformly shrunk archs (depth and every width scaled by one fraction) that are `feasible`, largest first.

        Candidate fractions are the ratios at which some dimension changes choice; costs
        grow with the fraction, so the first feasible one is the largest.
        """
        dims = (self.depth_choices, self.hidden_choices, self.head_choices, self.ffn_choices)
        seen: set[ArchConfig] = set()
        for fraction in sorted({c / max(choices) for choices in dims for c in choices}, reverse=True):
            arch = self.uniform_at(fraction)
            if arch not in seen and feasible(arch):
                seen.add(arch)
                yield arch, fraction

    def size(self) -> int:
        """Number of distinct archs: per-layer choices multiply, summed over depths (times the layer
        selections that differ at that depth: at full depth every selection keeps every layer)."""
        per_layer = len(self.head_choices) * len(self.ffn_choices)
        selections = len(self.layer_selection_choices)
        return len(self.hidden_choices) * sum(
            per_layer**d * (selections if d < self.max_depth else 1) for d in self.depth_choices
        )

    # ----- sampling and variation ---------------------------------------
    def sample(self, rng: RngLike = None) -> ArchConfig:
        """Uniform over depth, hidden and each layer's heads/FFN (AutoFormer-style)."""
        r = _as_rng(rng)
        d = r.choice(self.depth_choices)
        hidden = r.choice(self.hidden_choices)
        heads = tuple(r.choice(self.head_choices) for _ in range(d))
        ffn = tuple(r.choice(self.ffn_choices) for _ in range(d))
        selections = self.layer_selection_choices
        selection = selections[0] if len(selections) == 1 else r.choice(selections)
        return self.canonical(ArchConfig(d, hidden, heads, ffn, selection))

    def _with_selection(self, arch: ArchConfig, selection: str) -> ArchConfig:
        """`arch` keeping the layers `selection` names, canonical. A space with one selection draws
        nothing for it, so the random streams (and every seeded result) of such spaces are unchanged."""
        return self.canonical(ArchConfig(arch.depth, arch.hidden, arch.heads, arch.ffn, selection))

    def mutate(
        self,
        arch: ArchConfig,
        rng: RngLike = None,
        prob: float = 0.2,
        depth_prob: float = 0.4,
        hidden_prob: float = 0.4,
    ) -> ArchConfig:
        """Resample depth/hidden (and the layer selection, with `depth_prob`) and each layer's dims with `prob`.

        A deeper depth appends freshly sampled layers; a shallower one keeps the prefix.
        """
        for name, p in (("prob", prob), ("depth_prob", depth_prob), ("hidden_prob", hidden_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"mutate: {name} must be in [0, 1], got {p}")
        r = _as_rng(rng)
        depth = r.choice(self.depth_choices) if r.random() < depth_prob else arch.depth
        hidden = r.choice(self.hidden_choices) if r.random() < hidden_prob else arch.hidden
        heads, ffn = [], []
        for i in range(depth):
            if i < arch.depth:
                heads.append(r.choice(self.head_choices) if r.random() < prob else arch.heads[i])
                ffn.append(r.choice(self.ffn_choices) if r.random() < prob else arch.ffn[i])
            else:
                heads.append(r.choice(self.head_choices))
                ffn.append(r.choice(self.ffn_choices))
        selection = arch.layer_selection
        if len(self.layer_selection_choices) > 1 and r.random() < depth_prob:
            selection = r.choice(self.layer_selection_choices)
        return self._with_selection(ArchConfig(depth, hidden, tuple(heads), tuple(ffn)), selection)

    def crossover(self, a: ArchConfig, b: ArchConfig, rng: RngLike = None, prob: float = 0.5) -> ArchConfig:
        """Uniform crossover: each gene comes from `b` with probability `prob`.

        Depth is inherited from one parent; layers the other parent lacks come from
        the parent that has them.
        """
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"crossover: prob must be in [0, 1], got {prob}")
        r = _as_rng(rng)

        def pick(x: Any, y: Any) -> Any:
            return y if r.random() < prob else x

        depth = pick(a.depth, b.depth)
        hidden = pick(a.hidden, b.hidden)
        heads, ffn = [], []
        for i in range(depth):
            pa, pb = i < a.depth, i < b.depth
            if pa and pb:
                heads.append(pick(a.heads[i], b.heads[i]))
                ffn.append(pick(a.ffn[i], b.ffn[i]))
            else:
                src = a if pa else b
                heads.append(src.heads[i])
                ffn.append(src.ffn[i])
        selection = a.layer_selection
        if len(self.layer_selection_choices) > 1:
            selection = pick(a.layer_selection, b.layer_selection)
        return self._with_selection(ArchConfig(depth, hidden, tuple(heads), tuple(ffn)), selection)

    def _shrink_moves(self, arch: ArchConfig, floor: ArchConfig | None) -> list[tuple[str, int]]:
        """The genes of `arch` above both the smallest choice and `floor`'s gene (layers `floor` lacks: no floor)."""

        def above(name: str, choices: tuple[int, ...]) -> list[tuple[str, int]]:
            low = min(choices)
            theirs = getattr(floor, name) if floor is not None else ()
            limits = [max(low, theirs[i]) if i < len(theirs) else low for i in range(arch.depth)]
            return [(name, i) for i, (v, limit) in enumerate(zip(getattr(arch, name), limits)) if v > limit]

        moves: list[tuple[str, int]] = []
        if arch.depth > max(min(self.depth_choices), floor.depth if floor else 0):
            moves.append(("depth", 0))
        if arch.hidden > max(min(self.hidden_choices), floor.hidden if floor else 0):
            moves.append(("hidden", 0))
        return moves + above("heads", self.head_choices) + above("ffn", self.ffn_choices)

    def shrink(self, arch: ArchConfig, rng: RngLike = None, floor: ArchConfig | None = None) -> ArchConfig | None:
        """`arch` one random step smaller, or None when no gene can shrink (down to `floor`, if given).

        The move is uniform over those available: depth one choice down (dropping the last
        layers), hidden one choice down (only when hidden is elastic), or one layer's heads or
        FFN size one choice down; with a `floor` (e.g. a mutant's parent) only genes above the
        floor's move, so repeated shrinks undo growth and keep the rest of the child. Every cost
        in this package (params, FLOPs, latency) grows with every size, so shrinking an
        over-budget arch moves it towards the budget, and an arch no larger than a feasible
        floor is feasible; repair relies on that. Chains are finite: every move lowers a choice.
        """
        r = _as_rng(rng)
        moves = self._shrink_moves(arch, floor)
        if not moves:
            return None

        def lower(choices: tuple[int, ...], v: int) -> int:
            return max(c for c in choices if c < v)

        name, i = r.choice(moves)
        sel = arch.layer_selection
        if name == "depth":
            d = lower(self.depth_choices, arch.depth)
            return ArchConfig(d, arch.hidden, arch.heads[:d], arch.ffn[:d], sel)
        if name == "hidden":
            return ArchConfig(arch.depth, lower(self.hidden_choices, arch.hidden), arch.heads, arch.ffn, sel)
        values = list(getattr(arch, name))
        values[i] = lower(self.head_choices if name == "heads" else self.ffn_choices, values[i])
        heads, ffn = (tuple(values), arch.ffn) if name == "heads" else (arch.heads, tuple(values))
        return ArchConfig(arch.depth, arch.hidden, heads, ffn, sel)

    # ----- costs ----------------------------------------------------------
    def embedding_params(self, arch: ArchConfig) -> int:
        """Embedding matrices only (word, position, token type): what 'non-embedding' excludes."""
        width = self.embedding_size or arch.hidden
        return (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * width

    def params(self, arch: ArchConfig, embeddings: bool = True) -> int:
        """Exact parameter count of the exported model for `arch`.

        With `embeddings=False`, the three embedding matrices are left out (the
        usual 'non-embedding' count); their LayerNorm and any projection stay in.
        """
        h, d = arch.hidden, self.head_dim
        width = self.embedding_size or h
        total = 2 * width  # embedding LayerNorm
        if self.embedding_size:
            total += width * h + h  # ELECTRA embeddings_project
        for n, f in zip(arch.heads, arch.ffn):
            a = n * d
            total += 3 * (h * a + a) + (a * h + h) + 2 * h  # q, k, v, attention output, LayerNorm
            total += (h * f + f) + (f * h + h) + 2 * h  # FFN in, FFN out, LayerNorm
        if self.has_pooler:
            total += h * h + h
        if embeddings:
            total += self.embedding_params(arch)
        return total

    def flops(self, arch: ArchConfig, seq_len: int = 128) -> int:
        """Matmul FLOPs (2 x multiply-adds) per token of the encoder at `seq_len`.

        Counts the Q/K/V/output projections, the attention score and value products
        (which grow with `seq_len`), the FFN, and the ELECTRA embedding projection.
        Softmax, LayerNorm, activations and the per-sequence pooler are left out.
        """
        if seq_len < 1:
            raise ValueError(f"flops: seq_len must be >= 1, got {seq_len}")
        h, d = arch.hidden, self.head_dim
        total = 2 * self.embedding_size * h if self.embedding_size else 0
        for n, f in zip(arch.heads, arch.ffn):
            a = n * d
            total += 2 * (3 * h * a + a * h)  # projections
            total += 2 * 2 * seq_len * a  # QK^T and AV, per query token
            total += 2 * 2 * h * f  # FFN
        return total
