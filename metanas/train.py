"""Supernet training on `accelerate`: sampling rules, checkpoints, exact resume.

One optimizer step runs the objective on a set of subnets chosen by the sampling
rule and accumulates their gradients:

- `sandwich` (BigNAS/AutoFormer): the largest, the smallest and N random subnets,
  optionally distilling the non-largest ones in place from the largest's detached
  last-layer Q/K/V relations;
- `uniform` (SPOS): one random subnet.

The subnets of step k come from `random.Random` seeded with (seed, k), so every
rank samples the same archs and a resumed run samples what the uninterrupted run
would have. The data order of each epoch is a permutation seeded with (seed,
epoch), so a checkpoint only needs the (epoch, batch) position. Together with the
model, optimizer, scheduler and every RNG state, this makes a resumed run reach
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metanas.config import Recipe
from metanas.objectives import build_objective, relation_loss
from metanas.objectives.base import Objective
from metanas.space import ArchConfig, SearchSpace
from metanas.supernet.model import ElasticBert

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
SUPERNET_FILE = "supernet.pt"
SUMMARY_FILE = "train_summary.json"
RECIPE_FILE = "recipe.yaml"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_FORMAT = "metanas.train-checkpoint/1"
SUPERNET_FORMAT = "metanas.supernet/1"
REWIRE_EXAMPLES = 64  # training examples used to measure head/neuron importance


# --------------------------------------------------------------------------- sampling and schedules


def step_archs(
    space: SearchSpace, sampling: str, seed: int, step: int, num_random: int = 2
) -> list[tuple[str, ArchConfig]]:
    """The (role, arch) pairs trained at `step`; a pure function of its arguments.

    Sandwich: largest, smallest, then `num_random` random subnets; uniform: one random.
    The largest comes first so its relations can serve as in-place distillation targets.
    """
    rng = random.Random(f"metanas-archs:{seed}:{step}")
    if sampling == "uniform":
        return [("random", space.sample(rng))]
    if sampling != "sandwich":
        raise ValueError(f"sampling must be 'sandwich' or 'uniform', got {sampling!r}")
    randoms = [("random", space.sample(rng)) for _ in range(num_random)]
    return [("largest", space.largest()), ("smallest", space.smallest()), *randoms]


def middle_arch(space: SearchSpace) -> ArchConfig:
    """The median choice of every dimension, uniform over layers: a fixed mid-size probe."""

    def median(choices: tuple[int, ...]) -> int:
        return choices[len(choices) // 2]

    return space.uniform(
        median(space.depth_choices),
        median(space.hidden_choices),
        median(space.head_choices),
        median(space.ffn_choices),
    )


def eval_archs(space: SearchSpace) -> dict[str, ArchConfig]:
    """The three subnets validated during training, keyed by role."""
    return {"smallest": space.smallest(), "middle": middle_arch(space), "largest": space.largest()}


def lr_multiplier(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup over `warmup` steps, then linear/cosine decay to 0 at `total`, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be linear, cosine or constant, got {schedule!r}")


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases, LayerNorm weights and other vectors do not."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- data order


class EpochOrder:
    """Deterministic batches: epoch e is a permutation seeded with (seed, e), cut into global batches.

    A global batch is `batch_size * world_size` examples; rank r takes its r-th slice.
    The incomplete last batch of an epoch is dropped so every rank steps together.
    """

    def __init__(self, num_examples: int, batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.num_examples = num_examples
        self.batches_per_epoch = num_examples // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training set has {num_examples} examples, fewer than one global batch of "
                f"{batch_size * world_size} (training.batch_size={batch_size} x {world_size} processes); "
                "use more data or a smaller batch"
            )
        self._epoch = -1
        self._perm: list[int] = []

    def indices(self, epoch: int, batch: int) -> list[int]:
        """This rank's example indices for batch `batch` of epoch `epoch`."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_examples, generator=g).tolist()
            self._epoch = epoch
        start = (batch * self.world_size + self.rank) * self.batch_size
        return self._perm[start : start + self.batch_size]


# --------------------------------------------------------------------------- model wrapper


class SupernetWithObjective(nn.Module):
    """The supernet and the objective's heads as one module, so DDP syncs both.

    `forward` computes one subnet's loss. It can capture the last layer's Q/K/V (and
    the attention mask the layer saw) through a forward hook, which is how the
    largest subnet provides in-place distillation targets whatever the objective.
    """

    def __init__(self, sn: ElasticBert, objective: Objective) -> None:
        super().__init__()
        self.sn = sn
        self.objective = objective

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
        capture_qkv: bool = False,
        distill_target: tuple[torch.Tensor, ...] | None = None,
        distill_weight: float = 1.0,
        relation_heads: int = 1,
    ) -> tuple[torch.Tensor, dict[str, float], tuple[torch.Tensor, ...] | None]:
        captured: list[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]] = []

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if not captured:  # objectives that run the subnet twice: keep the first pass
                mask = args[1] if len(args) > 1 else kwargs.get("mask")
                captured.append((output[2], None if mask is None else mask[:, 0, 0, :]))

        handle = None
        if capture_qkv or distill_target is not None:
            handle = self.sn.encoder.layer[arch.depth - 1].register_forward_hook(hook, with_kwargs=True)
        try:
            loss, logs = self.objective.loss(self.sn, batch, arch, context)
        finally:
            if handle is not None:
                handle.remove()
        logs = {**logs, "objective": loss.detach().item()}
        if distill_target is not None:
            qkv, mask = captured[0]
            inplace = relation_loss(qkv, distill_target, mask, relation_heads)
            loss = loss + distill_weight * inplace
            logs["inplace"] = inplace.detach().item()
        target = tuple(t.detach() for t in captured[0][0]) if capture_qkv else None
        return loss, logs, target


# --------------------------------------------------------------------------- state: RNG, checkpoints


def _rng_state(objective: Objective) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "objective": objective.get_rng_state() if hasattr(objective, "get_rng_state") else None,
    }
    return state


def _set_rng_state(state: dict[str, Any], objective: Objective) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if state["objective"] is not None:
        objective.set_rng_state(state["objective"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then `os.replace`: never a torn file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint (weights-only unpickling: no code runs on load)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a metanas training checkpoint")
    return ckpt


def _all_gather(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- Ctrl-C


class GracefulInterrupt:
    """Turns the first SIGINT into a request to stop after the current step (a second one aborts).

    Stopping at a step boundary means the checkpoint written on Ctrl-C is exact.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort without saving)")

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the checkpoint is on disk; `step` is the last completed step."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint saved to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """Where a finished run put its outputs, its headline numbers, and the trained modules.

    `before`/`after`: validation metric per probe subnet (smallest, middle, largest);
    `final_losses`: the last logged training means (`loss/<role>`, `grad_norm`).
    """

    supernet: ElasticBert
    objective: Objective
    run_dir: Path
    supernet_path: Path
    summary_path: Path
    checkpoint_path: Path
    metrics_path: Path
    steps: int
    metric_name: str
    before: dict[str, float] | None
    after: dict[str, float] | None
    final_losses: dict[str, float]


# --------------------------------------------------------------------------- training


def _cpu_distributed() -> bool:
    """torchrun on a machine without CUDA: accelerate must be told to use gloo on CPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from teacher {path!r}: {str(e).splitlines()[0]}") from None


def _collate_rows(ds: Any, indices: list[int], collate: Callable[[list[dict]], dict]) -> dict[str, torch.Tensor]:
    rows = ds[indices]
    return collate([{k: rows[k][i] for k in rows} for i in range(len(indices))])


def _build_objective(recipe: Recipe, sn: ElasticBert, tokenizer: Any, num_labels: int | None) -> Objective:
    try:
        return build_objective(
            recipe.objective.name,
            sn,
            num_labels=num_labels,
            mask_token_id=tokenizer.mask_token_id,
            special_token_ids=list(tokenizer.all_special_ids),
            seed=recipe.training.seed,
            **recipe.objective.options,
        )
    except TypeError as e:
        raise ValueError(f"objective.options: {e}") from None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two recipe dicts (a resumed run warns about them)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _check_recipe(recipe: Recipe) -> None:
    """Cross-section checks that need no data or model."""
    from metanas.objectives.task import NO_LABELS_MESSAGE

    t = recipe.training
    if recipe.objective.name == "task" and recipe.data.label_column is None:
        raise ValueError(NO_LABELS_MESSAGE)
    if t.inplace_distill and t.sampling != "sandwich":
        raise ValueError("training.inplace_distill needs training.sampling=sandwich (the largest subnet is the target)")


def train_supernet(recipe: Recipe, run_dir: str | os.PathLike | None = None, resume: bool = False) -> TrainResult:
    """Train the supernet of `recipe` into `run_dir` (default: `recipe.run_dir`).

    `resume=True` continues from `run_dir/checkpoint.pt` exactly; without it an
    existing checkpoint is an error, so a finished run is never overwritten by accident.
    Ctrl-C saves a checkpoint at the next step boundary and raises `TrainingInterrupted`.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from metanas.data import Collator, build_datasets
    from metanas.supernet.convert import load_teacher_config
    from metanas.supernet.rewire import rewire
    from metanas.tracking import METRICS_FILE, Tracker

    if run_dir is None and recipe.run_dir is None:
        raise ValueError("no run directory: set run_dir in the recipe or pass --run-dir")
    run_dir = Path(run_dir if run_dir is not None else recipe.run_dir)
    _check_recipe(recipe)
    t = recipe.training
    ckpt_path = run_dir / CHECKPOINT_FILE
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"cannot resume: {str(ckpt_path)!r} does not exist")
    if not resume and ckpt_path.is_file():
        raise ValueError(f"{str(run_dir)!r} already holds a checkpoint; pass --resume or choose another run dir")

    accelerator = Accelerator(
        cpu=_cpu_distributed(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    # bf16 autocast is ours rather than accelerate's mixed_precision, whose process-wide state
    # would refuse a second run with a different setting in the same process.
    autocast = functools.partial(torch.autocast, accelerator.device.type, torch.bfloat16, enabled=t.bf16)
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    device = accelerator.device
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
    random.seed(t.seed + rank)
    np.random.seed(t.seed + rank)
    torch.manual_seed(t.seed + rank)

    # ---- data (main process tokenizes first so the others read its cache)
    teacher_path = recipe.teacher.resolved_path()
    teacher_config = load_teacher_config(teacher_path)
    tokenizer = _load_tokenizer(teacher_path)
    with accelerator.main_process_first():
        bundle = build_datasets(recipe.data, tokenizer, teacher_config=teacher_config, cache_dir=run_dir / "cache")
    collate = Collator(tokenizer)
    order = EpochOrder(len(bundle.train), t.batch_size, world, rank, t.seed)
    n_val = min(len(bundle.validation), t.eval_batches * t.batch_size)
    val_batches = [
        _collate_rows(bundle.validation, list(range(i, min(i + t.batch_size, n_val))), collate)
        for i in range(0, n_val, t.batch_size)
    ]

    # ---- model, objective, optimizer
    sn = ElasticBert.from_teacher(teacher_path, space_overrides=recipe.space)
    permutation = None
    if recipe.teacher.rewire:
        rewire_batch = _collate_rows(bundle.train, list(range(min(REWIRE_EXAMPLES, len(bundle.train)))), collate)
        permutation = rewire(sn, rewire_batch)
    objective = _build_objective(recipe, sn, tokenizer, bundle.num_labels)
    model = SupernetWithObjective(sn, objective).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr)
    warmup = int(t.warmup_ratio * t.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_multiplier, warmup=warmup, total=t.steps, schedule=t.schedule)
    )
    archs_to_eval = eval_archs(sn.space)
    relation_heads = t.inplace_relation_heads or getattr(objective, "relation_heads", max(sn.space.head_choices))

    step, epoch, batch_in_epoch, tokens_seen = 0, 0, 0, 0
    before: dict[str, float] | None = None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["world_size"] != world:
            raise ValueError(
                f"the checkpoint was written by {ckpt['world_size']} processes; resume with the same number "
                f"(got {world})"
            )
        sn.load_state_dict(ckpt["model"])
        objective.load_state_dict(ckpt["objective"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        tokens_seen = ckpt["tokens_seen"]
        before = json.loads(ckpt["before_json"])
        _set_rng_state(ckpt["rng"][rank], objective)
        changed = recipe_changes(json.loads(ckpt["recipe_json"]), recipe.to_dict())
        if changed:
            logger.warning("resuming with a recipe that differs from the checkpoint's in: %s", ", ".join(changed))
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, step, epoch, batch_in_epoch)
    ddp_model = accelerator.prepare(model)

    def evaluate() -> dict[str, float] | None:
        """Validation metric of the three probe subnets; main process only, RNG untouched."""
        if not val_batches or not is_main:
            return None
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            scores = {role: objective.evaluate(sn, arch, val_batches) for role, arch in archs_to_eval.items()}
        random.setstate(state)
        return scores

    def save_checkpoint() -> None:
        rng_states = _all_gather(_rng_state(objective), world)
        if is_main:
            atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "tokens_seen": tokens_seen,
                    "world_size": world,
                    "model": sn.state_dict(),
                    "objective": objective.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_states,
                    "before_json": json.dumps(before),
                    "recipe_json": json.dumps(recipe.to_dict()),
                },
                ckpt_path,
            )
        accelerator.wait_for_everyone()

    def next_batch() -> dict[str, torch.Tensor]:
        nonlocal epoch, batch_in_epoch
        batch = _collate_rows(bundle.train, order.indices(epoch, batch_in_epoch), collate)
        batch_in_epoch += 1
        if batch_in_epoch == order.batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        return {k: v.to(device) for k, v in batch.items()}

    metric = objective.metric_name
    tracker = Tracker(
        run_dir,
        config=recipe.to_dict(),
        use_wandb=recipe.logging.wandb,
        project=recipe.logging.project,
        name=recipe.logging.name,
        tags=recipe.logging.tags,
        is_main=is_main,
    )
    with tracker, GracefulInterrupt() as interrupt:
        if not resume:
            before = evaluate()
            if before is not None:
                tracker.log({f"val/{metric}/{role}": v for role, v in before.items()}, step=0)
        window: dict[str, list[float]] = {}
        window_tokens, window_time = 0, 0.0
        final_losses: dict[str, float] = {}
        progress = _progress(t.steps, step, is_main)
        while step < t.steps:
            stop = torch.tensor(float(interrupt.requested), device=device)
            if world > 1:
                torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            if stop.item():
                save_checkpoint()
                progress.close()
                raise TrainingInterrupted(step, ckpt_path)
            started = time.perf_counter()
            archs = step_archs(sn.space, t.sampling, t.seed, step, t.num_random)
            step_losses: dict[str, list[float]] = {}
            step_tokens = 0
            ddp_model.train()
            for micro in range(t.grad_accum):
                batch = next_batch()
                step_tokens += int(batch["attention_mask"].sum())
                with autocast():
                    context = objective.prepare(sn, batch)
                target = None
                for j, (role, arch) in enumerate(archs):
                    last = micro == t.grad_accum - 1 and j == len(archs) - 1
                    distill = t.inplace_distill and role != "largest"
                    with contextlib.nullcontext() if last else accelerator.no_sync(ddp_model):
                        with autocast():
                            loss, logs, qkv = ddp_model(
                                batch,
                                arch,
                                context,
                                capture_qkv=t.inplace_distill and role == "largest",
                                distill_target=target if distill else None,
                                distill_weight=t.inplace_weight,
                                relation_heads=relation_heads,
                            )
                        accelerator.backward(loss / t.grad_accum)
                    if qkv is not None:
                        target = qkv
                    step_losses.setdefault(f"loss/{role}", []).append(logs["objective"])
                    if "inplace" in logs:
                        step_losses.setdefault("loss/inplace", []).append(logs["inplace"])
            grad_norm = None
            if t.grad_clip > 0:
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), t.grad_clip))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += step_tokens * world
            window_tokens += step_tokens * world
            window_time += time.perf_counter() - started
            for k, v in step_losses.items():
                window.setdefault(k, []).extend(v)
            if grad_norm is not None:
                window.setdefault("grad_norm", []).append(grad_norm)

            if step % t.log_every == 0 or step == t.steps:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                reduced = accelerator.reduce(torch.tensor(list(means.values()), device=device), "mean")
                final_losses = dict(zip(means, reduced.tolist()))
                tok_s = window_tokens / window_time if window_time > 0 else 0.0
                tracker.log(
                    {
                        **final_losses,
                        "lr": scheduler.get_last_lr()[0],
                        "tokens_per_s": tok_s,
                        "tokens_seen": tokens_seen,
                        "epoch": epoch,
                    },
                    step=step,
                )
                progress.set_postfix(
                    loss=f"{final_losses.get('loss/largest', final_losses.get('loss/random', 0)):.4f}",
                    tok_s=f"{tok_s:,.0f}",
                    refresh=False,
                )
                window, window_tokens, window_time = {}, 0, 0.0
            progress.update(1)
            if t.eval_every and step % t.eval_every == 0 and step < t.steps:
                scores = evaluate()
                if scores is not None:
                    tracker.log({f"val/{metric}/{role}": v for role, v in scores.items()}, step=step)
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
                save_checkpoint()
        progress.close()
        save_checkpoint()
        after = evaluate()
        if after is not None:
            tracker.log({f"val/{metric}/{role}": v for role, v in after.items()}, step=step)
        summary = {
            "steps": step,
            "tokens_seen": tokens_seen,
            "objective": recipe.objective.name,
            "metric_name": metric,
            "higher_is_better": objective.higher_is_better,
            "archs": {role: arch.to_dict() for role, arch in archs_to_eval.items()},
            "params": {role: sn.space.params(arch) for role, arch in archs_to_eval.items()},
            "before": before,
            "after": after,
            "final_losses": final_losses,
        }
        if is_main:
            tracker.summary(
                {
                    f"{when}/{metric}/{role}": v
                    for when in ("before", "after")
                    for role, v in (summary[when] or {}).items()
                }
            )
            _save_supernet(
                run_dir / SUPERNET_FILE, sn, objective, recipe, tokenizer, bundle.num_labels, permutation, step
            )
            tokenizer.save_pretrained(str(run_dir / TOKENIZER_DIR))
            (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        accelerator.wait_for_everyone()
    return TrainResult(
        supernet=sn,
        objective=objective,
        run_dir=run_dir,
        supernet_path=run_dir / SUPERNET_FILE,
        summary_path=run_dir / SUMMARY_FILE,
        checkpoint_path=ckpt_path,
        metrics_path=run_dir / METRICS_FILE,
        steps=step,
        metric_name=metric,
        before=before,
        after=after,
        final_losses=final_losses,
    )


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc="train-supernet",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )


# --------------------------------------------------------------------------- trained supernet


def _save_supernet(
    path: Path,
    sn: ElasticBert,
    objective: Objective,
    recipe: Recipe,
    tokenizer: Any,
    num_labels: int | None,
    permutation: dict[str, list[list[int]]] | None,
    step: int,
) -> None:
    meta = {
        "config": sn.config.to_dict(),
        "space": sn.space.to_dict(),
        "source": sn.source,
        "rewire": permutation,
        "objective": {
            "name": recipe.objective.name,
            "options": recipe.objective.options,
            "num_labels": num_labels,
            "mask_token_id": tokenizer.mask_token_id,
            "special_token_ids": list(tokenizer.all_special_ids),
            "seed": recipe.training.seed,
        },
        "step": step,
        "recipe": recipe.to_dict(),
    }
    atomic_torch_save(
        {
            "format": SUPERNET_FORMAT,
            "meta_json": json.dumps(meta),
            "supernet": sn.state_dict(),
            "objective": objective.state_dict(),
        },
        path,
    )


@dataclass
class TrainedSupernet:
    """A supernet trained by `train_supernet`, loaded back for search or export."""

    supernet: ElasticBert
    objective_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    run_dir: Path

    @property
    def tokenizer_path(self) -> Path:
        return self.run_dir / TOKENIZER_DIR

    def original_teacher(self) -> ElasticBert:
        """The teacher as the supernet started (converted and rewired): the KD target.

        Rebuilt from the source checkpoint plus the saved rewiring permutation, so the
        trained file does not have to carry a second copy of the weights.
        """
        from metanas.supernet.rewire import permute_layer

        source = self.meta["source"]
        if not source:
            raise ValueError("the trained supernet records no teacher path to rebuild the teacher from")
        space = SearchSpace.from_dict(self.meta["space"])
        overrides = {k: v for k, v in space.to_dict().items() if k.endswith("_choices")}
        teacher = ElasticBert.from_teacher(source, space_overrides=overrides)
        perm = self.meta["rewire"]
        if perm is not None:
            for i, (heads, ffn) in enumerate(zip(perm["heads"], perm["ffn"])):
                permute_layer(teacher, i, torch.tensor(heads), torch.tensor(ffn))
        return teacher

    def objective(self) -> Objective:
        """The training objective with its trained heads (KD rebuilds the original teacher)."""
        from metanas.objectives import make_teacher

        o = self.meta["objective"]
        teacher = make_teacher(self.original_teacher()) if o["name"] == "kd" else None
        objective = build_objective(
            o["name"],
            self.supernet,
            teacher=teacher,
            num_labels=o["num_labels"],
            mask_token_id=o["mask_token_id"],
            special_token_ids=o["special_token_ids"],
            seed=o["seed"],
            **o["options"],
        )
        objective.load_state_dict(self.objective_state)
        return objective


def load_trained_supernet(run_dir: str | os.PathLike) -> TrainedSupernet:
    """Load `run_dir/supernet.pt` written at the end of `train_supernet` (eval mode, CPU)."""
    from transformers import AutoConfig

    run_dir = Path(run_dir)
    path = run_dir / SUPERNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained supernet at {str(path)!r}; run `metanas train-supernet` first")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != SUPERNET_FORMAT:
        raise ValueError(f"{str(path)!r} is not a metanas supernet file")
    meta = json.loads(data["meta_json"])
    config_dict = dict(meta["config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    sn = ElasticBert(config, SearchSpace.from_dict(meta["space"]))
    sn.load_state_dict(data["supernet"])
    sn.source = meta["source"]
    return TrainedSupernet(supernet=sn.eval(), objective_state=data["objective"], meta=meta, run_dir=run_dir)
