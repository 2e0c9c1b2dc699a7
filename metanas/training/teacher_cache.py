"""The frozen teacher's outputs per training example, computed once and shared by every distilled model.

The final distillation trains the student and each baseline on the same seeded
batches from the same frozen teacher, so the teacher's forward pass for an example
is the same every time it is drawn. `TeacherCache` keeps each example's teacher
outputs (the last hidden state, the last layer's query/key/value when some model
distilled from it is narrower than the teacher and, with the layer loss, every
earlier layer's output; its real tokens only, in the dtype the teacher computed
them) up to a memory limit, and runs the teacher only on the examples of a batch it
has not seen. Past the limit it keeps computing, it stops storing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

# A teacher output: per-token tensors, each [B, S, width] (distill: last hidden state, then query, key, value when
# the cache keeps them, then the earlier layers' outputs when the layer loss is on). Every call of one cache returns
# the same number.
TeacherOutput = list[torch.Tensor]
TeacherForward = Callable[[dict[str, torch.Tensor]], TeacherOutput]


class TeacherCache:
    """Teacher outputs keyed by training-example index, bounded by `max_bytes`.

    `qkv`: whether the outputs include the teacher's last-layer query/key/value, which
    only a student narrower than the teacher reads (the relation loss); at equal width
    they are 3 of the tensors kept per example for nothing.
    """

    def __init__(self, max_bytes: int, qkv: bool = True) -> None:
        if max_bytes < 0:
            raise ValueError(f"teacher cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes, self.qkv = max_bytes, qkv
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.store = True  # False: serve what is cached, keep nothing new (the last model distilled)
        self._rows: dict[int, list[torch.Tensor]] = {}  # index -> the TeacherOutput's rows, each [length, width]

    @classmethod
    def for_students(cls, max_bytes: int, student_widths: Iterable[int], teacher_width: int) -> TeacherCache:
        """A cache for students of these hidden widths: the teacher's query/key/value kept only if one is
        narrower (its relation loss reads them)."""
        return cls(max_bytes, qkv=any(w != teacher_width for w in student_widths))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, index: int) -> bool:
        return index in self._rows

    @property
    def full(self) -> bool:
        """True once nothing more fits under the limit."""
        return self.bytes >= self.max_bytes

    def stats(self) -> dict[str, Any]:
        return {
            "examples": len(self),
            "megabytes": round(self.bytes / 2**20, 1),
            "hits": self.hits,
            "misses": self.misses,
        }

    def outputs(self, indices: list[int], inputs: dict[str, torch.Tensor], forward: TeacherForward) -> TeacherOutput:
        """The teacher's outputs for the batch `inputs` of examples `indices` (right-padded, [B, S]).

        Runs `forward` on the uncached rows only, stores them while under the limit,
        and returns float32 tensors shaped as if the teacher had run on the whole batch
        (padded positions are zeros: every distillation loss masks them).
        """
        mask = inputs["attention_mask"]
        lengths = mask.sum(1).tolist()
        missing = [row for row, i in enumerate(indices) if i not in self._rows]
        self.hits += len(indices) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(indices):  # nothing cached: the teacher's own batch, padding zeroed
            computed = forward(inputs)
            if self.store and self.bytes < self.max_bytes:  # else no copy: nothing would be kept
                self._keep(indices, lengths, range(len(indices)), computed)
            keep = mask[..., None].to(torch.float32)
            return [t.float() * keep for t in computed]
        fresh: dict[int, list[torch.Tensor]] = {}
        if missing:
            computed = forward({k: v[missing] for k, v in inputs.items()})
            fresh = dict(zip(missing, self._keep(indices, lengths, missing, computed)))
        per_row = [fresh[row] if row in fresh else self._rows[i] for row, i in enumerate(indices)]
        return [_pad_stack([parts[p] for parts in per_row], mask.shape[1]) for p in range(len(per_row[0]))]

    def _keep(
        self, indices: list[int], lengths: list[int], rows: Any, computed: TeacherOutput
    ) -> list[list[torch.Tensor]]:
        """Each of `rows` (positions in the batch; `computed` holds them in that order) as its tensors cut to
        its real tokens, stored while storing is on and the limit allows."""
        out = []
        for j, row in enumerate(rows):
            parts = [t[j, : int(lengths[row])].detach().clone() for t in computed]
            size = sum(p.numel() * p.element_size() for p in parts)
            if self.store and self.bytes + size <= self.max_bytes:
                self._rows[indices[row]] = parts
                self.bytes += size
            out.append(parts)
        return out


def _pad_stack(rows: list[torch.Tensor], seq: int) -> torch.Tensor:
    """[length_i, width] rows -> one float32 [B, seq, width] tensor, zeros after each row's length."""
    out = torch.zeros(len(rows), seq, rows[0].shape[-1], dtype=torch.float32)
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r.float()
    return out
