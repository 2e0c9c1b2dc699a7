"""The relaxation behind the differentiable search: architecture logits, straight-through Gumbel
samples, gates on ElasticBert's prefix-sliced units, and expected costs by formula.

ElasticBert keeps the first k heads / FFN neurons of a layer (prefix slicing), so a width choice
k of a layer is a 0/1 mask over that layer's largest width, and a distribution p over the choices
is the soft mask sum_k p_k * mask_k. A relaxation step samples one discrete arch with
straight-through Gumbel-softmax (Jang et al. 2017; FBNet, Wu et al. 2019): the forward value of
every gate is the hard 0/1 mask of the sample, so the objective's loss is exactly that arch's
loss, while the gradient reaches every choice, also the wider ones whose extra units run with
gate 0. The gates are forward hooks on the supernet (nothing in its forward changes): per layer
they scale the attention context by head and the FFN activations by neuron, and cut the layer's
returned Q/K/V to the sampled head width (what MiniLM-style KD reads).

Depth and the hidden width are global choices that cannot be a mask on the largest arch without
changing the loss (the KD relation reads the subnet's *last* layer; LayerNorm normalises over the
active width), so the forward runs at the sampled depth and hidden width and those two get a
score-function (REINFORCE) gradient with a per-batch moving-average baseline; so do the heads of a
layer whose Q/K/V the objective reads (their count is the width of what it reads, which no gate
expresses). The objective's gradient and the budget penalty's are normalised by separate Adam
moments, so neither's scale depends on the other's unit.

The expected cost of the factorized distribution is exact: params, FLOPs and a linear latency
predictor are a term of the hidden width plus a sum over the present layers of terms of
(hidden, heads) and (hidden, FFN), and the choices are independent, so the expectation is a
product of probabilities with those terms, read off the cost model itself (`CostTerms`).
"""

from __future__ import annotations

import base64
import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from metanas.space import ArchConfig, SearchSpace

DIMENSIONS = ("depth", "hidden", "heads", "ffn")
ADAM_BETAS = (0.9, 0.999)
SOURCES = ("loss", "cost")  # the gradient sources, each with its own Adam moments
ADAM_EPS = 1e-8
ADDITIVITY_PROBES = 16  # random archs on which the per-layer decomposition of a cost is verified
ADDITIVITY_TOLERANCE = 1e-6  # relative


def generator_to_json(g: torch.Generator) -> str:
    """A torch.Generator's state as base64 text."""
    return base64.b64encode(bytes(g.get_state().tolist())).decode("ascii")


def generator_from_json(text: str) -> torch.Tensor:
    return torch.tensor(list(base64.b64decode(text)), dtype=torch.uint8)


def _gumbel(shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """Standard Gumbel noise (float64, CPU): -log of a unit exponential."""
    return -torch.empty(tuple(shape), dtype=torch.float64).exponential_(generator=g).log()


@dataclass
class Sample:
    """One relaxation step's draw: the discrete arch, the largest-width arch the forward runs, and the gates."""

    arch: ArchConfig
    hull: ArchConfig
    index: dict[str, torch.Tensor]  # the chosen index of every dimension (heads/FFN: one per layer position)
    head_gates: torch.Tensor  # [layers, max_heads * head_dim], forward value 0/1, straight-through gradient
    ffn_gates: torch.Tensor  # [layers, max_ffn]
    qkv_layers: set[int] = field(default_factory=set)  # layers whose Q/K/V the objective read (see `gated`)


class ArchLogits:
    """Independent categorical logits (float64) for depth, hidden and each layer position's heads and FFN,
    with their Adam state; an arch of depth d reads the first d layer positions."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.choices = {
            "depth": space.depth_choices,
            "hidden": space.hidden_choices,
            "heads": space.head_choices,
            "ffn": space.ffn_choices,
        }
        layers = space.max_depth
        shapes = {
            "depth": (len(space.depth_choices),),
            "hidden": (len(space.hidden_choices),),
            "heads": (layers, len(space.head_choices)),
            "ffn": (layers, len(space.ffn_choices)),
        }
        self.logits = {k: torch.zeros(s, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}
        # Adam moments per gradient source: the objective's ("loss") and the budget penalty's ("cost")
        self.adam = {
            source: {m: {k: torch.zeros(s, dtype=torch.float64) for k, s in shapes.items()} for m in ("m", "v")}
            for source in SOURCES
        }
        self.adam_t = 0
        # prefix masks: row k keeps the first choice_k units
        hd = space.head_dim
        heads = torch.tensor(space.head_choices)
        self._head_mask = (torch.arange(max(space.head_choices) * hd)[None, :] < (heads * hd)[:, None]).double()
        ffn = torch.tensor(space.ffn_choices)
        self._ffn_mask = (torch.arange(max(space.ffn_choices))[None, :] < ffn[:, None]).double()

    # ----- distributions -----------------------------------------------------
    def probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax of every distribution (differentiable)."""
        return {k: torch.softmax(t, dim=-1) for k, t in self.logits.items()}

    def log_prob(self, arch: ArchConfig) -> float:
        """log p(arch) under the factorized distribution (the first `arch.depth` layer positions)."""
        c = self.choices
        with torch.no_grad():
            lp = {k: torch.log_softmax(t, dim=-1) for k, t in self.logits.items()}
            total = lp["depth"][c["depth"].index(arch.depth)] + lp["hidden"][c["hidden"].index(arch.hidden)]
            for i, (n, f) in enumerate(zip(arch.heads, arch.ffn)):
                total = total + lp["heads"][i, c["heads"].index(n)] + lp["ffn"][i, c["ffn"].index(f)]
        return float(total)

    def _arch(self, index: dict[str, Any]) -> ArchConfig:
        """The arch of chosen indices (tensors or lists; heads/FFN one per layer position)."""
        c = self.choices
        index = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in index.items()}
        depth = c["depth"][index["depth"]]
        heads = tuple(c["heads"][j] for j in index["heads"][:depth])
        ffn = tuple(c["ffn"][j] for j in index["ffn"][:depth])
        return ArchConfig(depth, c["hidden"][index["hidden"]], heads, ffn)

    def mode(self) -> ArchConfig:
        """The most probable choice of every dimension (the arch a DARTS-style derivation keeps)."""
        with torch.no_grad():
            return self._arch({k: t.argmax(dim=-1) for k, t in self.logits.items()})

    def draw(self, count: int, g: torch.Generator) -> list[tuple[ArchConfig, float]]:
        """`count` archs sampled from the distribution (Gumbel-max, the same noise layout every time), each with
        its log-probability (the first `depth` layer positions count)."""
        c = self.choices
        with torch.no_grad():
            noisy = {k: t.detach()[None] + _gumbel((count, *t.shape), g) for k, t in self.logits.items()}
            index = {k: v.argmax(dim=-1) for k, v in noisy.items()}
            lp = {k: torch.log_softmax(t.detach(), dim=-1) for k, t in self.logits.items()}
            depths = torch.tensor(c["depth"])[index["depth"]]  # [count]
            present = torch.arange(self.space.max_depth)[None, :] < depths[:, None]  # [count, layers]
            per_layer = sum(lp[k].gather(1, index[k].T).T for k in ("heads", "ffn"))  # [count, layers]
            total = lp["depth"][index["depth"]] + lp["hidden"][index["hidden"]] + (per_layer * present).sum(dim=1)
        lists, scores = {k: v.tolist() for k, v in index.items()}, total.tolist()
        return [(self._arch({k: v[j] for k, v in lists.items()}), scores[j]) for j in range(count)]

    def sample(self, g: torch.Generator, tau: float) -> Sample:
        """One straight-through Gumbel-softmax draw for a relaxation step."""
        noise = {k: _gumbel(t.shape, g) for k, t in self.logits.items()}
        index = {k: (t.detach() + noise[k]).argmax(dim=-1) for k, t in self.logits.items()}
        arch = self._arch(index)
        gates = {}
        for name, mask in (("heads", self._head_mask), ("ffn", self._ffn_mask)):
            soft = torch.softmax((self.logits[name] + noise[name]) / tau, dim=-1)
            hard = torch.nn.functional.one_hot(index[name], soft.shape[-1]).double()
            gates[name] = (hard + soft - soft.detach()) @ mask
        hull = ArchConfig(
            arch.depth,
            arch.hidden,
            (max(self.choices["heads"]),) * arch.depth,
            (max(self.choices["ffn"]),) * arch.depth,
        )
        return Sample(arch, hull, index, gates["heads"], gates["ffn"])

    def score_log_prob(self, sample: Sample) -> torch.Tensor:
        """log p of the choices no gate can express, which the score-function term multiplies: depth, hidden,
        and the heads of every layer whose Q/K/V the objective read (their width is what it reads)."""
        total = torch.zeros((), dtype=torch.float64)
        for k in ("depth", "hidden"):
            if len(self.choices[k]) > 1:
                total = total + torch.log_softmax(self.logits[k], dim=-1)[sample.index[k]]
        if len(self.choices["heads"]) > 1:
            for i in sorted(sample.qkv_layers):
                total = total + torch.log_softmax(self.logits["heads"][i], dim=-1)[sample.index["heads"][i]]
        return total

    # ----- optimisation --------------------------------------------------------
    def adam_step(self, grads: dict[str, dict[str, torch.Tensor]], lr: float, cost_weight: float) -> None:
        """One step on the logits: lr x (Adam direction of the loss + cost_weight x Adam direction of the cost).

        Each source is normalised by its own second moments, so the step sizes do not depend on the loss's
        unit and a strong penalty while over budget does not leave the objective's gradient scaled down for
        hundreds of steps after (one shared Adam would); `cost_weight` is the ratio of the two step sizes.
        The moments are kept by hand so the state is plain JSON.
        """
        b1, b2 = ADAM_BETAS
        self.adam_t += 1
        weights = {"loss": 1.0, "cost": cost_weight}
        with torch.no_grad():
            for k, t in self.logits.items():
                for source in SOURCES:
                    g, m, v = grads[source][k], self.adam[source]["m"][k], self.adam[source]["v"][k]
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    m_hat, v_hat = m / (1 - b1**self.adam_t), v / (1 - b2**self.adam_t)
                    t.sub_(lr * weights[source] * m_hat / (v_hat.sqrt() + ADAM_EPS))

    # ----- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Logits and Adam moments as nested lists of Python floats (float64: exact through JSON)."""

        def lists(d: dict[str, torch.Tensor]) -> dict[str, Any]:
            return {k: t.detach().tolist() for k, t in d.items()}

        adam = {source: {m: lists(moments[m]) for m in ("m", "v")} for source, moments in self.adam.items()}
        return {"logits": lists(self.logits), "adam": adam, "t": self.adam_t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            targets = [(state["logits"], self.logits)]
            targets += [(state["adam"][s][m], self.adam[s][m]) for s in SOURCES for m in ("m", "v")]
            for saved, target in targets:
                for k, t in target.items():
                    t.copy_(torch.tensor(saved[k], dtype=torch.float64))
        self.adam_t = int(state["t"])


@contextlib.contextmanager
def gated(sn: Any, sample: Sample) -> Iterator[None]:
    """Apply `sample`'s gates to the supernet's first `sample.arch.depth` layers while the block runs.

    Per layer: the attention context (the input of `attention.output.dense`) is scaled by the head
    gates, the FFN activations (the input of `output.dense`) by the neuron gates, and the layer's
    returned Q/K/V and attention probabilities are cut to the sampled heads. With 0/1 forward values
    this is exactly the sliced forward of `sample.arch`. The layers whose Q/K/V a forward is asked
    for are added to `sample.qkv_layers`.
    """
    handles = []
    head_dim = sn.space.head_dim
    depth = sample.arch.depth

    def scale(gate: torch.Tensor) -> Callable[..., tuple[Any, ...]]:
        def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            return (x * gate.to(device=x.device, dtype=x.dtype), *args[1:])

        return hook

    def cut(heads: int) -> Callable[..., tuple[Any, ...]]:
        def hook(module: Any, args: tuple[Any, ...], out: tuple[Any, ...]) -> tuple[Any, ...]:
            x, probs, qkv = out
            probs = None if probs is None else probs[:, :heads]
            return x, probs, tuple(t[..., : heads * head_dim] for t in qkv)

        return hook

    def reads(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        wanted = kwargs.get("output_qkv") or []
        sample.qkv_layers.update(range(depth) if wanted is True else (i % depth for i in wanted))

    try:
        handles.append(sn.register_forward_pre_hook(reads, with_kwargs=True))
        for i in range(depth):
            layer = sn.encoder.layer[i]
            handles.append(layer.attention.output.dense.register_forward_pre_hook(scale(sample.head_gates[i])))
            handles.append(layer.output.dense.register_forward_pre_hook(scale(sample.ffn_gates[i])))
            handles.append(layer.register_forward_hook(cut(sample.arch.heads[i])))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen_eval(*modules: Any) -> Iterator[None]:
    """Eval mode (no dropout) with gradients enabled, every submodule's mode restored after."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, mode in saved:
            m.training = mode


class CostTerms:
    """A cost as base(hidden) + sum over present layers of layer(hidden) + heads(hidden, n) + ffn(hidden, f).

    The terms are read off `cost` (arch -> number) on depth-1 and depth-2 archs, then checked on the
    smallest, the largest and random archs: a cost that is not such a sum (e.g. a measured latency)
    is refused with a clear error rather than relaxed wrongly.
    """

    def __init__(self, space: SearchSpace, cost: Callable[[ArchConfig], float], name: str) -> None:
        self.space, self.name = space, name
        n0, f0 = min(space.head_choices), min(space.ffn_choices)
        rows = []
        for h in space.hidden_choices:
            one = cost(ArchConfig(1, h, (n0,), (f0,)))
            layer = cost(ArchConfig(2, h, (n0, n0), (f0, f0))) - one
            heads = [cost(ArchConfig(2, h, (n0, n), (f0, f0))) - one - layer for n in space.head_choices]
            ffn = [cost(ArchConfig(2, h, (n0, n0), (f0, f))) - one - layer for f in space.ffn_choices]
            rows.append((one - layer, layer, heads, ffn))
        self.base = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        self.layer = torch.tensor([r[1] for r in rows], dtype=torch.float64)
        self.heads = torch.tensor([r[2] for r in rows], dtype=torch.float64)  # [hidden, head choices]
        self.ffn = torch.tensor([r[3] for r in rows], dtype=torch.float64)  # [hidden, ffn choices]
        self._check(cost)

    def of(self, arch: ArchConfig) -> float:
        """The cost of one arch from the terms (equal to the cost model's, as `_check` verified)."""
        s = self.space
        h = s.hidden_choices.index(arch.hidden)
        total = float(self.base[h])
        for n, f in zip(arch.heads, arch.ffn):
            total += float(self.layer[h] + self.heads[h, s.head_choices.index(n)] + self.ffn[h, s.ffn_choices.index(f)])
        return total

    def _check(self, cost: Callable[[ArchConfig], float]) -> None:
        rng = random.Random(0)  # a private stream: the strategy's own randomness is untouched
        randoms = [self.space.sample(rng) for _ in range(ADDITIVITY_PROBES)]
        probes = [self.space.smallest(), self.space.largest(), *randoms]
        for arch in probes:
            want, got = float(cost(arch)), self.of(arch)
            if not math.isclose(want, got, rel_tol=ADDITIVITY_TOLERANCE, abs_tol=1e-9):
                raise ValueError(
                    f"differentiable: the cost {self.name!r} is not a sum of per-layer terms ({want:g} for "
                    f"{arch.to_json()}, the decomposition gives {got:g}), so it cannot be relaxed; use cost "
                    "'params', 'non_embedding_params', 'flops', or a latency predictor (a linear LatencyPredictor)"
                )

    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[cost] under the factorized distribution `probs` (differentiable in the probabilities)."""
        depths = torch.tensor(self.space.depth_choices)
        present = (depths[None, :] > torch.arange(self.space.max_depth)[:, None]).double() @ probs["depth"]  # [L]
        per_layer = self.layer[None, :] + probs["heads"] @ self.heads.T + probs["ffn"] @ self.ffn.T  # [L, hidden]
        return probs["hidden"] @ (self.base + present @ per_layer)


# --------------------------------------------------------------------------- the relaxation step

BASELINE_DECAY = 0.9  # of the per-batch moving-average loss the depth/hidden score-function term subtracts
CONTEXT_SEED_OFFSET = 7919  # per-batch seeds of an objective's own RNG while its context is prepared
COST_KEYS = {
    "params": "params",
    "non_embedding_params": "non_embedding_params",
    "flops": "flops",
    "latency": "latency_ms",
}
GradReducer = Callable[[dict[str, dict[str, torch.Tensor]]], dict[str, dict[str, torch.Tensor]]]


def _latency_is_linear(cost_model: Any) -> bool:
    """Whether the cost model's latency comes from a (linear, cheap) LatencyPredictor, not a measurement."""
    from metanas.cost.latency_predictor import LatencyPredictor

    source = getattr(cost_model, "_latency", None)
    return isinstance(getattr(source, "__self__", source), LatencyPredictor)


def penalised_costs(cost_model: Any, limits: dict[str, float], cost: str, who: str) -> list[str]:
    """The cost-model keys the budget penalty is on: every limit ('auto') or the one `cost` names; a latency
    needs a linear latency predictor. `who` starts the error messages (the option's owner)."""
    if cost == "auto":
        keys = list(limits)
    else:
        keys = [COST_KEYS[cost]]
        if keys[0] not in limits:
            limited = ", ".join(limits) or "nothing"
            raise ValueError(
                f"{who}: cost={cost!r} but the budget does not limit {keys[0]} (it limits {limited}); set cost to "
                "'auto' or to a cost the budget limits"
            )
    if not keys:
        raise ValueError(f"{who}: the budget limits nothing, so there is no cost to drive the relaxed arch into")
    if "latency_ms" in keys and not _latency_is_linear(cost_model):
        raise ValueError(
            f"{who}: a latency penalty needs the cost model's latency predictor (a LatencyPredictor: linear in "
            "per-layer features); a measured latency, or none, cannot be relaxed. Use a latency predictor, or set "
            "cost to 'flops' or 'params' with a budget on it"
        )
    return keys


def prepared_context(objective: Any, sn: Any, batch: dict[str, Any], seed: int) -> dict[str, Any]:
    """The objective's context for `batch` (no grad). An objective with its own RNG (MLM masking) prepares it
    from a state seeded by `seed` that is put back after, so the context does not depend on what ran before
    and the objective's training stream is untouched."""
    saved = objective.get_rng_state() if hasattr(objective, "set_rng_state") else None
    if saved is not None:
        objective.set_rng_state(torch.Generator().manual_seed(seed).get_state())
    try:
        with torch.no_grad():
            return objective.prepare(sn, batch)
    finally:
        if saved is not None:
            objective.set_rng_state(saved)


class Relaxation:
    """Architecture logits and what trains them: the Gumbel generator, the temperature schedule over
    `total_steps`, the per-batch loss baselines and the budget penalty.

    One `step` samples an arch (straight-through), takes the objective's loss of that arch on a batch
    with the supernet in eval mode, and moves the logits only (the weights get no gradient from it):

        the objective's loss  +  its score-function term for depth/hidden/read heads, and
        the penalty  sum over penalised costs of relu(E[cost] / (cost_target * limit) - 1).

    The differentiable search steps it on the frozen trained supernet; relaxed supernet training
    (`training.sampling: relaxed`) steps it once after every weight update (single-stage). `settings`
    has `arch_lr`, `tau_start`, `tau_end`, `cost_weight` and `cost_target` (a `DifferentiableConfig`).
    """

    def __init__(self, space: SearchSpace, settings: Any, total_steps: int, seed: int) -> None:
        self.space, self.settings, self.total_steps = space, settings, total_steps
        self.arch = ArchLogits(space)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0  # relaxation steps done (the temperature schedule's clock)
        self.baselines: dict[int, float] = {}  # batch index -> moving-average loss
        self.skipped_steps = 0  # steps whose loss was not finite (no update)
        self.penalties: list[tuple[CostTerms, float]] = []

    def penalize(self, cost_model: Any, limits: dict[str, float], keys: Sequence[str]) -> None:
        """Penalise the costs `keys` of `cost_model` against their absolute `limits`."""
        self.penalties = [
            (CostTerms(self.space, lambda a, k=key: cost_model.costs(a)[k], key), float(limits[key])) for key in keys
        ]

    def tau(self, step: int | None = None) -> float:
        """The Gumbel-softmax temperature at `step`: geometric from tau_start to tau_end over all steps."""
        s, total = self.settings, self.total_steps
        at = min(self.step if step is None else step, total - 1)
        return s.tau_start * (s.tau_end / s.tau_start) ** (at / (total - 1)) if total > 1 else s.tau_start

    def penalty(self) -> torch.Tensor:
        probs = self.arch.probabilities()
        total = torch.zeros((), dtype=torch.float64)
        for terms, limit in self.penalties:
            total = total + torch.relu(terms.expected(probs) / (self.settings.cost_target * limit) - 1)
        return total

    def run_step(
        self,
        sn: Any,
        objective: Any,
        batch: dict[str, Any],
        context: dict[str, Any],
        index: int,
        reduce: GradReducer | None = None,
    ) -> float | None:
        """One step on batch number `index`: returns the sampled arch's loss, or None when it was not finite
        (no update). `reduce` combines the gradients across processes before the update (data parallel)."""
        sample = self.arch.sample(self.generator, self.tau())
        self.step += 1
        with frozen_eval(sn, objective):
            with gated(sn, sample):
                loss, _ = objective.loss(sn, batch, sample.hull, context)
            value = float(loss.detach())
            finite = math.isfinite(value)
            if finite:
                baseline = self.baselines.get(index, value)
                surrogate = loss.double() + (value - baseline) * self.arch.score_log_prob(sample)
                grads = {"loss": self._grads(surrogate), "cost": self._grads(self.penalty())}
        if reduce is not None:  # every process takes part, finite or not
            flag = {"loss": {"finite": torch.tensor([float(finite)], dtype=torch.float64)}}
            finite = bool(reduce(flag)["loss"]["finite"].min() >= 1.0)
            if finite:
                grads = reduce(grads)
        if not finite:
            self.skipped_steps += 1
            return None
        self.arch.adam_step(grads, self.settings.arch_lr, self.settings.cost_weight)
        self.baselines[index] = BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * value
        return value

    def _grads(self, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """d value / d logits, zeros for logits it does not depend on."""
        logits = self.arch.logits
        if not value.requires_grad:
            return {k: torch.zeros_like(t) for k, t in logits.items()}
        grads = torch.autograd.grad(value, list(logits.values()), allow_unused=True)
        return {k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(logits.items(), grads)}

    def expected_costs(self) -> dict[str, dict[str, float]]:
        """Each penalised cost's expectation under the relaxed distribution, its limit, and the mode's cost."""
        with torch.no_grad():
            probs = self.arch.probabilities()
            mode = self.arch.mode()
            return {
                terms.name: {"expected": float(terms.expected(probs)), "limit": limit, "mode": terms.of(mode)}
                for terms, limit in self.penalties
            }

    def state_dict(self) -> dict[str, Any]:
        """Logits, Adam moments, generator, clock and baselines as JSON values."""
        return {
            **self.arch.state_dict(),
            "generator": generator_to_json(self.generator),
            "step": self.step,
            "baselines": [[i, b] for i, b in sorted(self.baselines.items())],
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.arch.load_state_dict(state)
        self.generator.set_state(generator_from_json(state["generator"]))
        self.step = int(state["step"])
        self.baselines = {int(i): float(b) for i, b in state["baselines"]}
        self.skipped_steps = int(state["skipped_steps"])
