"""Final distillation: a standalone exported student trained further from the original teacher.

After export the student is a plain Hugging Face model; a few hundred AdamW steps
on the training data align it with the teacher (in-batch embedding similarities and,
at equal width, hidden states, sentence embeddings and each kept layer's output
against the teacher layer it came from; across widths, last-layer relations). The
baselines get the same steps on the same batches.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from metanas._io import atomic_write_bytes
from metanas.objectives.losses import masked_mse, mean_pool, relation_loss
from metanas.precision import bf16_autocast
from metanas.training.compact_vocab import CompactVocabulary
from metanas.training.pace import TimeBudget
from metanas.training.schedule import adamw, lr_multiplier, param_groups
from metanas.training.teacher_cache import TeacherCache, TeacherOutput

# Up to this many tokens, a CPU training step runs attention on PyTorch's plain matmul-softmax kernel (math): at
# 16 x 64 tokens its forward and backward take 7.5 ms against 26 ms for the fused flash kernel PyTorch picks, and
# the fused one wins only from about 256 tokens (docs/benchmarks.md, "Session 8").
MATH_ATTENTION_MAX_TOKENS = 128


def training_attention(seq_len: int) -> contextlib.AbstractContextManager[Any]:
    """The attention kernel for a CPU training step on `seq_len`-token batches: math up to 128 tokens, else
    PyTorch's own choice."""
    if seq_len <= MATH_ATTENTION_MAX_TOKENS:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class _QKVCapture:
    """Forward hooks on the last layer's query/key/value projections of an HF BERT-like encoder."""

    def __init__(self, model: nn.Module) -> None:
        attention = model.encoder.layer[-1].attention.self
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            getattr(attention, name).register_forward_hook(self._hook(name)) for name in ("query", "key", "value")
        ]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            self.out[name] = output

        return hook

    def triple(self) -> list[torch.Tensor]:
        return [self.out[n] for n in ("query", "key", "value")]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def distillation_loss(
    s_hidden: torch.Tensor,
    t_hidden: torch.Tensor,
    s_qkv: list[torch.Tensor],
    t_qkv: list[torch.Tensor],
    mask: torch.Tensor,
    relation_heads: int,
    s_layers: Sequence[torch.Tensor] = (),
    t_layers: Sequence[torch.Tensor] = (),
    layer_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """In-batch embedding similarities, plus hidden states when the widths agree and relations when they do not.

    - similarities: MSE between the student's and teacher's in-batch cosine
      similarity matrices of mean-pooled embeddings (any widths; what retrieval uses);
    - same width: token hidden-state MSE and 1 - cosine of the sentence
      embeddings, so the exported model's own outputs align with the teacher's
      (no projection head that the exported model would lack);
    - same width and `layer_weight` > 0: `layer_weight` x the mean token MSE of each
      pair of `s_layers` / `t_layers` (a student layer's output against the teacher
      layer it was cut from, TinyBERT-style): a target for every layer, not only
      the last, which the last-layer losses reach only through depth;
    - other widths: last-layer MiniLMv2 Q-Q/K-K/V-V relation KL, the token-level
      target that needs no common width. At equal width the hidden states already
      pin the tokens down: there the relations scored lower with and without the
      layer loss and cost a third of a step (docs/benchmarks.md, "Session 8").
    """
    es, et = mean_pool(s_hidden, mask), mean_pool(t_hidden, mask)
    ns, nt = torch.nn.functional.normalize(es, dim=-1), torch.nn.functional.normalize(et, dim=-1)
    parts: dict[str, torch.Tensor] = {"similarity": ((ns @ ns.T - nt @ nt.T) ** 2).mean()}
    if s_hidden.shape[-1] != t_hidden.shape[-1]:
        parts["relation"] = relation_loss(s_qkv, t_qkv, mask, relation_heads)
    else:
        parts["hidden"] = masked_mse(s_hidden, t_hidden, mask)
        parts["cosine"] = 1 - (ns * nt).sum(-1).mean()
        if layer_weight > 0 and s_layers:
            pairs = [masked_mse(s, t, mask) for s, t in zip(s_layers, t_layers, strict=True)]
            parts["layers"] = torch.stack(pairs).mean()
    total = sum(layer_weight * v if k == "layers" else v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


class TeacherForward:
    """The frozen teacher's outputs for a batch, as `TeacherCache` keeps them: the last hidden state, with `qkv`
    the last layer's query/key/value, and with `layered` every earlier layer's output."""

    def __init__(self, teacher: PreTrainedModel, bf16: bool, layered: bool, qkv: bool = True) -> None:
        self.teacher, self.layered = teacher.eval(), layered
        self.autocast = bf16_autocast(bf16, "cpu", "export.distill_bf16")
        self.capture = _QKVCapture(teacher) if qkv else None

    def __call__(self, inputs: dict[str, torch.Tensor]) -> TeacherOutput:
        with torch.no_grad(), self.autocast:
            out = self.teacher(**inputs, output_hidden_states=self.layered)
        earlier = list(out.hidden_states[1:-1]) if self.layered else []
        qkv = self.capture.triple() if self.capture else []
        return [out.last_hidden_state, *qkv, *earlier]

    def close(self) -> None:
        if self.capture:
            self.capture.close()


class _DistillLosses:
    """The student's loss against the teacher's outputs for a batch (`TeacherForward`'s)."""

    def __init__(
        self,
        student: PreTrainedModel,
        teacher_heads: int,
        bf16: bool,
        teacher_layers: Sequence[int] | None,
        layer_weight: float,
        teacher_qkv: bool,
    ) -> None:
        self.student, self.heads, self.layer_weight = student, teacher_heads, layer_weight
        self.layered, self.earlier_from = teacher_layers is not None, 4 if teacher_qkv else 1
        # student layer i's target is teacher layer teacher_layers[i]; the last pair is the hidden-state loss already
        self.pairs = list(enumerate(teacher_layers or ()))[:-1]
        self.autocast = bf16_autocast(bf16, "cpu", "export.distill_bf16")
        self.s_cap = _QKVCapture(student) if teacher_qkv else None

    def __call__(self, inputs: dict[str, torch.Tensor], target: TeacherOutput) -> tuple[torch.Tensor, dict[str, float]]:
        t_hidden, t_qkv, t_earlier = target[0], target[1 : self.earlier_from], target[self.earlier_from :]
        with self.autocast:
            out = self.student(**inputs, output_hidden_states=self.layered)
        s_layers = [out.hidden_states[i + 1].float() for i, _ in self.pairs]
        t_layers = [t_earlier[t] for _, t in self.pairs]
        mask = inputs["attention_mask"].bool()
        s_qkv = self.s_cap.triple() if self.s_cap else []
        return distillation_loss(
            out.last_hidden_state.float(), t_hidden, s_qkv, t_qkv, mask, self.heads, s_layers, t_layers,
            self.layer_weight,
        )  # fmt: skip

    def close(self) -> None:
        if self.s_cap:
            self.s_cap.close()


# The teacher fills the cache in batches this large before a model's first step: bf16 on 2 cores its forward costs
# 3.2 ms an example at 64, 4.4 at 16 and 6.3 at 4, the few new examples a later batch brings (docs/benchmarks.md,
# "Session 9").
PREFILL_BATCH = 64


# Batches are cut from windows of this many batches' worth of examples sorted by length: on the quickstart's data a
# batch of 16 drawn at random is 74% real tokens, one from a sorted window of 256 examples 97%, and a student step
# costs about 1.25x less (docs/benchmarks.md, "Session 10").
LENGTH_WINDOW_BATCHES = 16


def batch_schedule(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of each step's batch, for examples of token `lengths`: seeded, so every model
    distilled with `seed` sees the same, and grouped by length, so a batch pads little.

    Passes over the data in a seeded order, each example once a pass: each window of
    `LENGTH_WINDOW_BATCHES` batches' worth of the order is sorted by length and cut
    into batches (a window's last few examples, fewer than a batch, wait for the next
    pass), and the pass's batches are shuffled. Every prefix of a schedule is the
    schedule of fewer steps.
    """
    n, window = len(lengths), batch_size * LENGTH_WINDOW_BATCHES
    if n < batch_size:
        raise ValueError(f"final distillation: {n} training examples, fewer than one batch of {batch_size}")
    rng = random.Random(f"metanas-distill:{seed}")
    out: list[list[int]] = []
    while len(out) < steps:
        order = list(range(n))
        rng.shuffle(order)
        batches = []
        for start in range(0, n, window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk) - batch_size + 1, batch_size)]
        rng.shuffle(batches)
        out += batches
    return out[:steps]


def example_lengths(rows: Any) -> list[int]:
    """Each tokenized example's length in tokens."""
    return [len(ids) for ids in rows["input_ids"]]


def _batch_inputs(rows: Any, collate: Callable[..., dict[str, torch.Tensor]], indices: list[int]) -> dict:
    picked = rows[indices]
    batch = collate([{k: picked[k][i] for k in picked} for i in range(len(indices))])
    return {k: v for k, v in batch.items() if k != "labels"}


def prefill_teacher(
    cache: TeacherCache,
    forward: Callable[[dict[str, torch.Tensor]], TeacherOutput],
    rows: Any,
    collate: Callable[..., dict[str, torch.Tensor]],
    schedule: list[list[int]],
) -> tuple[int, float]:
    """Run the teacher on every example `schedule` draws that `cache` lacks, `PREFILL_BATCH` at a time, while the
    cache stores and has room. Returns (examples computed, seconds).

    The examples go in order of length (the first drawn first among equals), so a batch pads little: in the
    order drawn, a batch of 64 pads every row to the longest of them.
    """
    todo = list(dict.fromkeys(i for batch in schedule for i in batch if i not in cache))
    if not cache.store or cache.full or not todo:
        return 0, 0.0
    started, done = time.perf_counter(), 0
    lengths = example_lengths(rows)
    todo.sort(key=lambda i: lengths[i])  # stable: among equal lengths, the order drawn
    chunks = [todo[i : i + PREFILL_BATCH] for i in range(0, len(todo), PREFILL_BATCH)]
    for chunk in tqdm(chunks, desc="teacher outputs", unit="batch", dynamic_ncols=True, mininterval=1.0):
        if cache.full:
            break
        inputs = _batch_inputs(rows, collate, chunk)
        with training_attention(inputs["input_ids"].shape[1]):
            cache.outputs(chunk, inputs, forward)
        done += len(chunk)
    return done, time.perf_counter() - started


def prefill(
    teacher: PreTrainedModel,
    rows: Any,
    collate: Callable[..., dict[str, torch.Tensor]],
    cache: TeacherCache,
    steps: int,
    batch_size: int,
    bf16: bool = False,
    seed: int = 0,
    layered: bool = False,
) -> tuple[int, float]:
    """`prefill_teacher` for the batches of `distill(..., steps, batch_size, seed=seed)` (the same outputs that
    `distill` with `layer_weight` > 0 when `layered`, else without, would compute). Returns (examples, seconds)."""
    forward = TeacherForward(teacher, bf16, layered, cache.qkv)
    try:
        schedule = batch_schedule(example_lengths(rows), batch_size, steps, seed)
        return prefill_teacher(cache, forward, rows, collate, schedule)
    finally:
        forward.close()


class _DecayPlan:
    """Linear warmup over 10% of the first plan's steps, then linear decay to zero at the total, which a time
    budget may set again (`replan`) at the end of the warmup and every tenth of the steps after it: the rate
    then goes on from where it is, straight to zero at the new total."""

    def __init__(self, steps: int) -> None:
        self.warmup = max(1, int(0.1 * steps))
        self.total, self.start, self.rate, self.next = steps, self.warmup, 1.0, self.warmup

    def multiplier(self, step: int) -> float:
        """The learning-rate multiplier of `step` (0-based), as `lr_multiplier`'s linear schedule without a re-plan."""
        if step < self.warmup:
            return lr_multiplier(step, self.warmup, self.total, "linear")
        return self.rate * max(0, self.total - step) / max(1, self.total - self.start)

    def due(self, done: int) -> bool:
        """Whether to plan again after `done` steps."""
        return self.next <= done < self.total

    def replan(self, done: int, total: int) -> int:
        """Decay from step `done` to zero at `total` (at least `done` + 1) from the current rate; the new total."""
        self.rate, self.start, self.total = self.multiplier(done), done, max(done + 1, total)
        self.next = done + max(1, self.total // 10)
        return self.total


class _Step:
    """One timed AdamW step of the student on the batch of some example indices (`batch` collates them), against
    the teacher's outputs for it (`target`: from the cache, or computed)."""

    def __init__(self, student: nn.Module, optimizer: Any, scheduler: Any, losses: Any, vocabulary: Any,
                 batch: Callable[[list[int]], dict], target: Callable) -> None:  # fmt: skip
        self.student, self.optimizer, self.scheduler = student, optimizer, scheduler
        self.losses, self.vocabulary, self.batch, self.target = losses, vocabulary, batch, target

    def __call__(self, indices: list[int]) -> dict[str, Any]:
        """The step's loss, its parts, its seconds (collation included) and its padded tokens."""
        started = time.perf_counter()
        inputs = self.batch(indices)
        with training_attention(inputs["input_ids"].shape[1]):
            loss, parts = self.losses(self.vocabulary.remap(inputs), self.target(indices, inputs))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        seconds, tokens = time.perf_counter() - started, inputs["input_ids"].numel()
        return {"loss": float(loss.detach()), **parts, "seconds": seconds, "tokens": tokens}


def _checked_cache(student: PreTrainedModel, teacher: PreTrainedModel, cache: TeacherCache | None) -> TeacherCache:
    """`cache`, or one that stores nothing, refused when it lacks the teacher's query/key/value a narrower
    student's relation loss reads."""
    width, teacher_width = student.config.hidden_size, teacher.config.hidden_size
    cache = TeacherCache.for_students(0, [width], teacher_width) if cache is None else cache
    if width != teacher_width and not cache.qkv:
        raise ValueError(
            f"final distillation: the student is {width} wide and the teacher {teacher_width}, so its relation loss "
            "reads the teacher's query/key/value, which this teacher cache does not keep (TeacherCache(..., qkv=True))"
        )
    return cache


def distill(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    rows: Any,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    batch_size: int,
    bf16: bool = False,
    seed: int = 0,
    desc: str = "distill",
    cache: TeacherCache | None = None,
    dropout: bool = False,
    teacher_layers: Sequence[int] | None = None,
    layer_weight: float = 0.0,
    budget: TimeBudget | None = None,
) -> dict[str, Any]:
    """Distil a standalone `student` from `teacher` for `steps` AdamW steps on `rows` (tokenized examples).

    Batches come from a seeded schedule grouped by length (`batch_schedule`), so the
    student and the baselines see the same data in the same order; linear warmup over
    10% of the steps, then linear decay. Each step's history records its seconds and
    padded tokens (`metanas.training.pace` fits the one on the other).
    `cache` (shared by every model distilled from this teacher) keeps the teacher's
    outputs per example, so the teacher runs once per example drawn, not once per
    step and model; before the first step it runs on every example the schedule
    will draw that the cache lacks, 64 at a time (`prefill_teacher`). Only the word
    embeddings of tokens in `rows` are trained (`CompactVocabulary`); the others are
    left as they were. `dropout` False runs the student in eval mode (no dropout; the
    gradients are the same computation): over a few hundred steps the noise costs
    more than it regularises (docs/benchmarks.md). `teacher_layers` (the teacher layer
    each student layer was cut from, `metanas.space.layer_indices`) with `layer_weight`
    > 0 adds the layer loss of `distillation_loss`; every model sharing a `cache` must
    then use it (the cache then keeps every teacher layer's output). A student narrower
    than the teacher needs a cache that keeps the teacher's query/key/value (`qkv`). With a `budget`, `steps` is
    a first plan, set again from the end of the warmup to what fits (`TimeBudget`): see the returned `steps`.
    """
    lengths = example_lengths(rows)
    schedule = batch_schedule(lengths, batch_size, max(steps, budget.most_steps) if budget else steps, seed)
    torch.manual_seed(seed)
    student.train(dropout)
    teacher.eval()
    cache = _checked_cache(student, teacher, cache)
    computed_before, started, history = cache.misses, time.perf_counter(), []
    with CompactVocabulary(student, rows["input_ids"]) as vocabulary:  # before the optimizer: it trains the rows
        optimizer = adamw(param_groups(student, 0.01), lr=lr)
        plan = _DecayPlan(steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.multiplier)
        layers = teacher_layers if layer_weight > 0 else None
        forward = TeacherForward(teacher, bf16, layered=layers is not None, qkv=cache.qkv)
        losses = _DistillLosses(student, teacher.config.num_attention_heads, bf16, layers, layer_weight, cache.qkv)
        batch, target = partial(_batch_inputs, rows, collate), partial(cache.outputs, forward=forward)
        step = _Step(student, optimizer, scheduler, losses, vocabulary, batch, target)
        try:
            prefilled, prefill_seconds = prefill_teacher(cache, forward, rows, collate, schedule[:steps])
            with tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0) as bar:
                while len(history) < plan.total:
                    history.append(step(schedule[len(history)]))
                    bar.update()
                    if budget is not None and plan.due(len(history)):
                        elapsed = time.perf_counter() - started
                        fits = budget.replanned_steps(elapsed, history, schedule, lengths, cache)
                        bar.total = plan.replan(len(history), fits)
        finally:
            losses.close()
            forward.close()
    student.eval()
    return {
        **_loss_summary(history),
        **({"planned_steps": steps} if budget else {}),
        "seconds": round(time.perf_counter() - started, 1),
        "teacher_examples_computed": cache.misses - computed_before,
        "teacher_prefilled": prefilled,
        "teacher_prefill_seconds": round(prefill_seconds, 2),
        "teacher_examples_cached": len(cache),
        "history": history,
    }


def _loss_summary(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Steps run, the first step's loss and the mean of the last tenth's."""
    window = history[-max(1, len(history) // 10) :]
    return {
        "steps": len(history),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": sum(h["loss"] for h in window) / len(window) if window else None,
    }


def save_weights(model: nn.Module, model_dir: Path) -> None:
    """Overwrite an exported directory's weights with `model`'s (same keys as the file written by export)."""
    path = model_dir / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    state = model.state_dict()
    tensors = {k: state[k].detach().contiguous() for k in keys}
    atomic_write_bytes(safetensors_bytes(tensors, metadata={"format": "pt"}), path)
