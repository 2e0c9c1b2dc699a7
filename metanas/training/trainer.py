"""Supernet training on `accelerate`: sampling rules, checkpoints, exact resume.

One optimizer step runs the objective on a set of subnets chosen by the sampling
rule and accumulates their gradients:

- `sandwich` (BigNAS/AutoFormer): the largest, the smallest and N random subnets,
  optionally distilling the non-largest ones in place from the largest's detached
  last-layer Q/K/V relations;
- `uniform` (SPOS): one random subnet;
- `relaxed` (single-stage search): the sandwich with its random subnets drawn from architecture
  logits that are trained alongside the weights, one relaxation step after every weight update
  (`relaxed_sampling`).

The subnets and the data order are pure functions of (seed, step) and (seed,
epoch) (`schedule`); with the model, optimizer, scheduler and every RNG state in
the checkpoint (`checkpoint`), a resumed run reaches the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from metanas._io import atomic_dir, atomic_write_json, atomic_write_text
from metanas._lock import RunLock
from metanas.config import Recipe, recipe_changes
from metanas.cost.model import CostModel
from metanas.data import Collator, build_datasets, collate_rows
from metanas.objectives.base import Objective
from metanas.objectives.build import build_objective
from metanas.objectives.losses import relation_loss
from metanas.objectives.task import NO_LABELS_MESSAGE
from metanas.precision import use_bf16
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_config
from metanas.supernet.model import ElasticBert
from metanas.supernet.rewire import rewire
from metanas.tracking import METRICS_FILE, Tracker
from metanas.training.artifact import RECIPE_FILE, SUMMARY_FILE, SUPERNET_FILE, TOKENIZER_DIR, save_trained_supernet
from metanas.training.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    GracefulInterrupt,
    TrainingDiverged,
    TrainingInterrupted,
    TrainState,
    rng_state,
    set_rng_state,
)
from metanas.training.relaxed_sampling import RelaxedSampling, check_relaxed_recipe, mean_over_ranks
from metanas.training.schedule import EpochOrder, adamw, eval_archs, lr_multiplier, param_groups, step_archs

logger = logging.getLogger(__name__)

REWIRE_EXAMPLES = 64  # training examples used to measure head/neuron importance


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
            last = self.sn.encoder.layer[self.sn.space.layer_indices(arch)[-1]]
            handle = last.register_forward_hook(hook, with_kwargs=True)
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


def _cpu_distributed() -> bool:
    """torchrun on a machine without CUDA: accelerate must be told to use gloo on CPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _load_tokenizer(path: str) -> Any:
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from teacher {path!r}: {str(e).splitlines()[0]}") from None


def _all_gather(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def check_recipe(recipe: Recipe) -> None:
    """Cross-section checks that need no data or model."""
    t = recipe.training
    if recipe.objective.name == "task" and recipe.data.label_column is None:
        raise ValueError(NO_LABELS_MESSAGE)
    if t.inplace_distill and t.sampling == "uniform":  # the largest subnet is the target
        raise ValueError("training.inplace_distill needs training.sampling sandwich or relaxed, not uniform")
    check_relaxed_recipe(recipe)


class _Window:
    """Training means between two log lines: losses per role, gradient norm, tokens and time."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.tokens, self.seconds = 0, 0.0

    def add(self, losses: dict[str, list[float]], grad_norm: float | None, tokens: int, seconds: float) -> None:
        for k, v in losses.items():
            self.values.setdefault(k, []).extend(v)
        if grad_norm is not None:
            self.values.setdefault("grad_norm", []).append(grad_norm)
        self.tokens += tokens
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self.values.items()}


class SupernetTrainer:
    """One training run: built from a recipe (data, supernet, objective, optimizer), then `run()`.

    Everything that resumes lives in `self.state` (a `TrainState`) plus the module
    and RNG states, which is exactly what `save_checkpoint` writes.
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        cost_model: CostModel | None = None,
    ) -> None:
        if run_dir is None and recipe.run_dir is None:
            raise ValueError("no run directory: set run_dir in the recipe or pass --run-dir")
        self.recipe, self.resume = recipe, resume
        self.run_dir = Path(run_dir if run_dir is not None else recipe.run_dir)
        check_recipe(recipe)
        self.ckpt_path = self.run_dir / CHECKPOINT_FILE
        if resume and not self.ckpt_path.is_file():
            raise FileNotFoundError(f"cannot resume: {str(self.ckpt_path)!r} does not exist")
        if not resume and self.ckpt_path.is_file():
            raise ValueError(
                f"{str(self.run_dir)!r} already holds a checkpoint; pass --resume or choose another run dir"
            )
        t = recipe.training
        self.accelerator = Accelerator(
            cpu=_cpu_distributed(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        # bf16 autocast is ours rather than accelerate's mixed_precision, whose process-wide state would refuse a
        # second run with a different setting in the same process; float32 where bf16 is emulated (use_bf16).
        device, bf16 = self.accelerator.device.type, use_bf16(t.bf16, self.accelerator.device.type, "training.bf16")
        self.autocast = functools.partial(torch.autocast, device, torch.bfloat16, enabled=bf16)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                atomic_write_text(recipe.to_yaml(), self.run_dir / RECIPE_FILE)
        random.seed(t.seed + self.rank)
        np.random.seed(t.seed + self.rank)
        torch.manual_seed(t.seed + self.rank)
        self._build_data()
        self._build_model(cost_model)
        self.state = TrainState()
        if resume:
            self._restore()
        self.ddp_model = self.accelerator.prepare(self.model)

    # ----- construction ------------------------------------------------------
    def _build_data(self) -> None:
        """Tokenized data (the main process tokenizes first, the others read its cache) and fixed val batches."""
        t = self.recipe.training
        self.teacher_path = self.recipe.teacher.resolved_path()
        teacher_config = load_teacher_config(self.teacher_path)
        self.tokenizer = _load_tokenizer(self.teacher_path)
        with self.accelerator.main_process_first():
            self.bundle = build_datasets(
                self.recipe.data, self.tokenizer, teacher_config=teacher_config, cache_dir=self.run_dir / "cache"
            )
        self.collate = Collator(self.tokenizer)
        self.order = EpochOrder(len(self.bundle.train), t.batch_size, self.world, self.rank, t.seed)
        n_val = min(len(self.bundle.validation), t.eval_batches * t.batch_size)
        self.val_batches = [
            collate_rows(self.bundle.validation, list(range(i, min(i + t.batch_size, n_val))), self.collate)
            for i in range(0, n_val, t.batch_size)
        ]

    def _build_model(self, cost_model: CostModel | None) -> None:
        """The converted (and rewired) supernet, the objective, the optimizer, the LR schedule, and with relaxed
        sampling the architecture logits (costs from `cost_model`, default: params and FLOPs by formula)."""
        r, t = self.recipe, self.recipe.training
        sn = ElasticBert.from_teacher(self.teacher_path, space_overrides=r.space)
        self.permutation = None
        if r.teacher.rewire:
            train = self.bundle.train
            batch = collate_rows(train, list(range(min(REWIRE_EXAMPLES, len(train)))), self.collate)
            self.permutation = rewire(sn, batch, r.teacher.hidden_importance)
        try:
            objective = build_objective(
                r.objective.name,
                sn,
                num_labels=self.bundle.num_labels,
                mask_token_id=self.tokenizer.mask_token_id,
                special_token_ids=list(self.tokenizer.all_special_ids),
                seed=t.seed,
                **r.objective.options,
            )
        except TypeError as e:
            raise ValueError(f"objective.options: {e}") from None
        self.sn, self.objective = sn, objective
        self.model = SupernetWithObjective(sn, objective).to(self.device)
        self.optimizer = adamw(param_groups(self.model, t.weight_decay), lr=t.lr)
        warmup = int(t.warmup_ratio * t.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_multiplier, warmup=warmup, total=t.steps, schedule=t.schedule)
        )
        self.archs_to_eval = eval_archs(sn.space)
        self.relaxed = RelaxedSampling.for_recipe(r, sn.space, cost_model, self.val_batches)
        self.relation_heads = t.inplace_relation_heads or getattr(
            objective, "relation_heads", max(sn.space.head_choices)
        )

    def _modules(self) -> dict[str, Any]:
        return {"model": self.sn, "objective": self.objective, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def _restore(self) -> None:
        ckpt = Checkpoint.load(self.ckpt_path)
        if ckpt.world_size != self.world:
            raise ValueError(
                f"the checkpoint was written by {ckpt.world_size} processes; resume with the same number "
                f"(got {self.world})"
            )
        fused = [group.get("fused") for group in self.optimizer.param_groups]
        for name, module in self._modules().items():
            module.load_state_dict(ckpt.modules[name])
        for group, flag in zip(self.optimizer.param_groups, fused):  # an older checkpoint's groups say unfused
            group["fused"] = flag
        self.state = ckpt.state
        if self.relaxed is not None:
            if self.state.relaxation is None:
                raise ValueError(f"{str(self.ckpt_path)!r} was not written by relaxed training; resume it as it ran")
            self.relaxed.relaxation.load_state_dict(self.state.relaxation)
        set_rng_state(ckpt.rng[self.rank], self.objective)
        changed = recipe_changes(ckpt.recipe, self.recipe.to_dict())
        if changed:
            logger.warning("resuming with a recipe that differs from the checkpoint's in: %s", ", ".join(changed))
        s = self.state
        logger.info(
            "resumed from %s at step %d (epoch %d, batch %d)", self.ckpt_path, s.step, s.epoch, s.batch_in_epoch
        )

    # ----- pieces of the loop ------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        """Validation metric of the three probe subnets; main process only, RNG untouched."""
        if not self.val_batches or not self.is_main:
            return None
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            scores = {
                role: self.objective.evaluate(self.sn, arch, self.val_batches)
                for role, arch in self.archs_to_eval.items()
            }
        random.setstate(state)
        return scores

    def save_checkpoint(self) -> None:
        if self.relaxed is not None:
            self.state.relaxation = self.relaxed.relaxation.state_dict()
        rng = _all_gather(rng_state(self.objective), self.world)
        if self.is_main:
            modules = {name: module.state_dict() for name, module in self._modules().items()}
            Checkpoint(self.state, self.world, self.recipe.to_dict(), modules, rng).save(self.ckpt_path)
        self.accelerator.wait_for_everyone()

    def next_batch(self) -> dict[str, torch.Tensor]:
        s = self.state
        batch = collate_rows(self.bundle.train, self.order.indices(s.epoch, s.batch_in_epoch), self.collate)
        s.batch_in_epoch += 1
        if s.batch_in_epoch == self.order.batches_per_epoch:
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        return {k: v.to(self.device) for k, v in batch.items()}

    def _stop_requested(self, interrupt: GracefulInterrupt) -> bool:
        """Ctrl-C on any rank stops every rank at the same step."""
        stop = torch.tensor(float(interrupt.requested), device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        return bool(stop.item())

    def _rank_scale(self, batch: dict[str, torch.Tensor]) -> float:
        """This rank's share (x world size) of what the objective's loss is a mean over, so that DDP's average of the
        ranks' gradients is the gradient of one process on the global batch; 1 with one process or equal shares."""
        count = self.objective.loss_count(batch) if self.world > 1 else None
        if count is None:
            return 1.0
        total = torch.tensor(float(count), device=self.device)
        torch.distributed.all_reduce(total)
        return float(count) * self.world / max(float(total.item()), 1.0)

    def _micro_step(self, archs: list[tuple[str, ArchConfig]], last_micro: bool, losses: dict[str, list[float]]) -> int:
        """Forward and backward every subnet of the step on one micro-batch; returns its token count."""
        t = self.recipe.training
        batch = self.next_batch()
        scale = self._rank_scale(batch) / t.grad_accum
        with self.autocast():
            context = self.objective.prepare(self.sn, batch)
        target = None
        for j, (role, arch) in enumerate(archs):
            last = last_micro and j == len(archs) - 1
            distill = t.inplace_distill and role != "largest"
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.ddp_model):
                with self.autocast():
                    loss, logs, qkv = self.ddp_model(
                        batch,
                        arch,
                        context,
                        capture_qkv=t.inplace_distill and role == "largest",
                        distill_target=target if distill else None,
                        distill_weight=t.inplace_weight,
                        relation_heads=self.relation_heads,
                    )
                self.accelerator.backward(loss * scale)
            if qkv is not None:
                target = qkv
            losses.setdefault(f"loss/{role}", []).append(logs["objective"])
            if "inplace" in logs:
                losses.setdefault("loss/inplace", []).append(logs["inplace"])
        return int(batch["attention_mask"].sum())

    def _check_finite(self, losses: dict[str, list[float]]) -> None:
        """Stop at the first non-finite loss, on every rank, before the optimizer applies anything."""
        bad = {k: v for k, vs in losses.items() for v in vs if not math.isfinite(v)}
        flag = torch.tensor(float(bool(bad)), device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            checkpoint = self.ckpt_path if self.ckpt_path.is_file() else None
            raise TrainingDiverged(self.state.step, bad, self.recipe.training.lr, checkpoint)

    def train_step(self, window: _Window) -> None:
        """One optimizer step over the sampling rule's subnets and `grad_accum` micro-batches."""
        t = self.recipe.training
        started = time.perf_counter()
        if self.relaxed is not None:
            archs = self.relaxed.archs(self.state.step)
        else:
            archs = step_archs(self.sn.space, t.sampling, t.seed, self.state.step, t.num_random)
        losses: dict[str, list[float]] = {}
        self.ddp_model.train()
        tokens = sum(self._micro_step(archs, micro == t.grad_accum - 1, losses) for micro in range(t.grad_accum))
        self._check_finite(losses)
        grad_norm = None
        if t.grad_clip > 0:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), t.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.relaxed is not None:
            reduce = functools.partial(mean_over_ranks, self.world, self.device) if self.world > 1 else None
            value = self.relaxed.update(self.sn, self.objective, self.val_batches, self.device, self.autocast, reduce)
            if value is not None:
                losses["loss/relaxation"] = [value]
        self.state.step += 1
        self.state.tokens_seen += tokens * self.world
        window.add(losses, grad_norm, tokens * self.world, time.perf_counter() - started)

    def _log(self, window: _Window, tracker: Tracker, progress: Any) -> dict[str, float]:
        """The window's means reduced over ranks, logged; returns them."""
        means = window.means()
        reduced = self.accelerator.reduce(torch.tensor(list(means.values()), device=self.device), "mean")
        final_losses = dict(zip(means, reduced.tolist()))
        tok_s = window.tokens / window.seconds if window.seconds > 0 else 0.0
        s = self.state
        tracker.log(
            {
                **final_losses,
                "lr": self.scheduler.get_last_lr()[0],
                "tokens_per_s": tok_s,
                "tokens_seen": s.tokens_seen,
                "epoch": s.epoch,
            },
            step=s.step,
        )
        progress.set_postfix(
            loss=f"{final_losses.get('loss/largest', final_losses.get('loss/random', 0)):.4f}",
            tok_s=f"{tok_s:,.0f}",
            refresh=False,
        )
        return final_losses

    def _log_eval(self, tracker: Tracker, scores: dict[str, float] | None) -> None:
        if scores is not None:
            metric = self.objective.metric_name
            tracker.log({f"val/{metric}/{role}": v for role, v in scores.items()}, step=self.state.step)

    def _loop(self, tracker: Tracker, interrupt: GracefulInterrupt, progress: Any) -> dict[str, float]:
        """Steps until `training.steps`, with logging, evaluation and checkpoints; the last logged losses."""
        t = self.recipe.training
        window, final_losses = _Window(), {}
        while self.state.step < t.steps:
            if self._stop_requested(interrupt):
                self.save_checkpoint()
                raise TrainingInterrupted(self.state.step, self.ckpt_path)
            self.train_step(window)
            step = self.state.step
            if step % t.log_every == 0 or step == t.steps:
                final_losses = self._log(window, tracker, progress)
                window = _Window()
            progress.update(1)
            if t.eval_every and step % t.eval_every == 0 and step < t.steps:
                self._log_eval(tracker, self.evaluate())
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
                self.save_checkpoint()
        return final_losses

    # ----- the run -----------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to `training.steps` (from the resumed step), then save the supernet; Ctrl-C checkpoints and raises."""
        r, t = self.recipe, self.recipe.training
        tracker = Tracker(
            self.run_dir,
            config=r.to_dict(),
            use_wandb=r.logging.wandb,
            project=r.logging.project,
            name=r.logging.name,
            tags=r.logging.tags,
            is_main=self.is_main,
        )
        with tracker, GracefulInterrupt() as interrupt:
            if not self.resume:
                self.state.before = self.evaluate()
                self._log_eval(tracker, self.state.before)
            with tqdm(
                total=t.steps,
                initial=self.state.step,
                disable=not self.is_main,
                desc="train-supernet",
                unit="step",
                dynamic_ncols=True,
                mininterval=1.0,
            ) as progress:  # closed before any error is reported, so the error is the last line
                final_losses = self._loop(tracker, interrupt, progress)
            self.save_checkpoint()
            after = self.evaluate()
            self._log_eval(tracker, after)
            self._save_outputs(tracker, after, final_losses)
        return TrainResult(
            supernet=self.sn,
            objective=self.objective,
            run_dir=self.run_dir,
            supernet_path=self.run_dir / SUPERNET_FILE,
            summary_path=self.run_dir / SUMMARY_FILE,
            checkpoint_path=self.ckpt_path,
            metrics_path=self.run_dir / METRICS_FILE,
            steps=self.state.step,
            metric_name=self.objective.metric_name,
            before=self.state.before,
            after=after,
            final_losses=final_losses,
        )

    def _save_outputs(self, tracker: Tracker, after: dict[str, float] | None, final_losses: dict[str, float]) -> None:
        """The trained supernet, its tokenizer and the summary (main process), then every rank waits."""
        s, metric = self.state, self.objective.metric_name
        summary = {
            "steps": s.step,
            "tokens_seen": s.tokens_seen,
            "objective": self.recipe.objective.name,
            "metric_name": metric,
            "higher_is_better": self.objective.higher_is_better,
            "archs": {role: arch.to_dict() for role, arch in self.archs_to_eval.items()},
            "params": {role: self.sn.space.params(arch) for role, arch in self.archs_to_eval.items()},
            "before": s.before,
            "after": after,
            "final_losses": final_losses,
        }
        if self.relaxed is not None:
            summary["relaxation"] = self.relaxed.summary()
        if self.is_main:
            tracker.summary(
                {
                    f"{when}/{metric}/{role}": v
                    for when in ("before", "after")
                    for role, v in (summary[when] or {}).items()
                }
            )
            save_trained_supernet(
                self.run_dir / SUPERNET_FILE,
                self.sn,
                self.objective,
                self.recipe,
                self.tokenizer,
                self.bundle.num_labels,
                self.permutation,
                s.step,
                None if self.relaxed is None else self.relaxed.saved(),
            )
            with atomic_dir(self.run_dir / TOKENIZER_DIR, overwrite=True) as tmp:
                self.tokenizer.save_pretrained(str(tmp))
            atomic_write_json(summary, self.run_dir / SUMMARY_FILE)
        self.accelerator.wait_for_everyone()


def train_supernet(
    recipe: Recipe,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    cost_model: CostModel | None = None,
) -> TrainResult:
    """Train the supernet of `recipe` into `run_dir` (default: `recipe.run_dir`).

    `resume=True` continues from `run_dir/checkpoint.pt` exactly; without it an
    existing checkpoint is an error, so a finished run is never overwritten by accident.
    Ctrl-C saves a checkpoint at the next step boundary and raises `TrainingInterrupted`.
    The run directory is locked for the run (by rank 0 under torchrun or accelerate). `cost_model`: the costs
    `training.sampling: relaxed` drives into the budget (default: params and FLOPs by formula, no latency).
    """
    check_recipe(recipe)  # before the lock: a recipe that cannot train leaves no directory behind
    target = run_dir if run_dir is not None else recipe.run_dir
    main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(target) if main and target is not None else contextlib.nullcontext():
        return SupernetTrainer(recipe, run_dir, resume, cost_model).run()
