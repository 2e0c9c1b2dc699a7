"""Task-agnostic knowledge distillation: MiniLMv2 self-attention relation distillation.

For the last layer of teacher and student, the concatenated query/key/value
projections ([B, S, A], A = heads * head_dim) are re-split into R *relation heads*
(A / R dims each) and turned into relations softmax(X X^T / sqrt(A / R)) over the
key positions. The student matches the teacher's Q-Q, K-K and V-V relations by KL
divergence. Because R is shared while A may differ, this works whatever the
student's head count or hidden width (MiniLMv2, Wang et al. 2021).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

from metanas.objectives._common import (
    check_batches,
    evaluation,
    model_inputs,
    module_device,
    to_device,
    token_mask,
)
from metanas.objectives.base import Objective
from metanas.objectives.losses import masked_mse, relation_loss
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert
from metanas.supernet.ops import ElasticLinear

EVAL_CACHE_SIZE = 64  # validation batches whose teacher outputs are kept


def make_teacher(sn: ElasticBert) -> ElasticBert:
    """A frozen copy of `sn` (its largest arch is the teacher), in eval mode."""
    teacher = copy.deepcopy(sn)
    teacher.requires_grad_(False)
    teacher.set_arch(teacher.space.largest())
    return teacher.eval()


class KDObjective(Objective):
    """Relation distillation from a frozen teacher, plus an optional hidden-state MSE.

    The teacher is stored outside nn.Module registration (`object.__setattr__`), so
    it is neither in `parameters()` (never optimized) nor in `state_dict()` (never
    checkpointed: it is reproducible from the source checkpoint). `.to()`/`.cuda()`
    still move it (see `_apply`), and `prepare` moves it to the batch's device.
    """

    name = "kd"
    metric_name = "kd_loss"
    higher_is_better = False

    def __init__(
        self,
        teacher: ElasticBert,
        relation_heads: int | None = None,
        hidden_weight: float = 0.0,
        temperature: float = 1.0,
        student_hidden: int | None = None,
    ) -> None:
        """`student_hidden`: the supernet's max hidden size (default: the teacher's),
        the input size of the hidden-state projection used when `hidden_weight > 0`."""
        super().__init__()
        if not isinstance(teacher, ElasticBert):
            raise TypeError(f"KDObjective: teacher must be an ElasticBert, got {type(teacher).__name__}")
        if hidden_weight < 0:
            raise ValueError(f"KDObjective: hidden_weight must be >= 0, got {hidden_weight}")
        if temperature <= 0:
            raise ValueError(f"KDObjective: temperature must be > 0, got {temperature}")
        teacher.requires_grad_(False)
        teacher.eval()
        object.__setattr__(self, "_teacher", teacher)
        self.teacher_arch = teacher.space.largest()
        if relation_heads is None:
            relation_heads = max(teacher.space.head_choices)
        self.relation_heads = int(relation_heads)
        if self.relation_heads < 1:
            raise ValueError(f"KDObjective: relation_heads must be >= 1, got {self.relation_heads}")
        self.hidden_weight = float(hidden_weight)
        self.temperature = float(temperature)
        self.teacher_hidden = self.teacher_arch.hidden
        self.projection: ElasticLinear | None = None
        if self.hidden_weight > 0:
            # Only built when used, so no parameter is left without gradient (DDP).
            in_features = student_hidden or self.teacher_hidden
            self.projection = ElasticLinear(in_features, self.teacher_hidden)
            with torch.no_grad():
                # Identity on the shared prefix: a student equal to the teacher starts at 0 loss.
                self.projection.weight.copy_(torch.eye(self.teacher_hidden, in_features))
                self.projection.bias.zero_()

    @property
    def teacher(self) -> ElasticBert:
        return self._teacher

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> KDObjective:
        # Keep the unregistered teacher on the same device/dtype as the objective.
        self._teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def loss_count(self, batch: dict[str, torch.Tensor]) -> float | None:
        """The relation and hidden losses are means over the batch's real tokens."""
        return float(token_mask(batch).sum())

    def prepare(self, sn: ElasticBert, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Teacher's last-layer Q/K/V and last hidden state, computed once per batch."""
        teacher = self._teacher
        device = batch["input_ids"].device
        if module_device(teacher) != device:
            teacher.to(device)
        teacher.eval()
        with torch.no_grad():
            out = teacher(**model_inputs(batch), arch=self.teacher_arch, output_qkv=[-1])
        return {"teacher_qkv": out.qkv[0], "teacher_hidden": out.last_hidden_state}

    def loss(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if "teacher_qkv" not in context:
            context = self.prepare(sn, batch)
        out = sn(**model_inputs(batch), arch=arch, output_qkv=[-1])
        mask = token_mask(batch)
        rel = relation_loss(out.qkv[0], context["teacher_qkv"], mask, self.relation_heads, self.temperature)
        parts = {"relation": rel.detach().item()}
        total = rel
        if self.projection is not None:
            pred = self.projection(out.last_hidden_state, self.teacher_hidden).float()
            target = context["teacher_hidden"].float()
            hid = masked_mse(pred, target, mask)
            parts["hidden"] = hid.detach().item()
            total = total + self.hidden_weight * hid
        parts["kd"] = total.detach().item()
        return total, parts

    def _eval_context(self, sn: ElasticBert, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Teacher outputs for a validation batch, cached by content: a search scores
        hundreds of subnets on the same few batches, and the frozen teacher's
        outputs never change."""
        ids = batch["input_ids"]
        key = hashlib.sha1(ids.cpu().numpy().tobytes() + str(tuple(ids.shape)).encode()).hexdigest()
        mask = batch.get("attention_mask")
        if mask is not None:
            key += hashlib.sha1(mask.cpu().numpy().tobytes()).hexdigest()
        cache = self.__dict__.setdefault("_eval_cache", {})
        if key not in cache:
            if len(cache) >= EVAL_CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[key] = self.prepare(sn, batch)
        return cache[key]

    def evaluate(self, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]) -> float:
        """Mean KD loss over the validation batches (eval mode, no dropout)."""
        check_batches("KDObjective", batches)
        device = module_device(sn)
        total = 0.0
        with evaluation(sn, self):
            for batch in batches:
                batch = to_device(batch, device)
                loss, _ = self.loss(sn, batch, arch, self._eval_context(sn, batch))
                total += float(loss)
        return total / len(batches)
