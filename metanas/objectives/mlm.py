"""Masked language modelling with a fresh, elastic BERT-style head.

Masking follows BERT: `mask_prob` of the real, non-special tokens are selected; of
those 80% become the mask token, 10% a random (non-special) token, 10% stay. The
head (dense -> activation -> LayerNorm -> decoder) is created fresh, so it works for
teachers saved without an MLM head; the decoder is tied to the supernet's word
embeddings (read through the active width) and has its own bias.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from metanas.objectives._common import (
    check_batches,
    evaluation,
    model_inputs,
    module_device,
    to_device,
    token_mask,
)
from metanas.objectives.base import Objective
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert
from metanas.supernet.ops import ElasticLayerNorm, ElasticLinear

IGNORE_INDEX = -100
# Offset between the training seed and the evaluation seed, so the two streams differ.
_EVAL_SEED_OFFSET = 1_000_003


def perplexity(loss: float) -> float:
    """exp(mean cross entropy), inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _config_special_ids(config: Any) -> list[int]:
    names = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id", "unk_token_id")
    ids = {getattr(config, n, None) for n in names}
    pad = getattr(config, "pad_token_id", None)
    ids.add(0 if pad is None else pad)
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


class MLMObjective(Objective):
    """Masked LM loss; validation metric `mlm_loss` (mean CE over masked tokens).

    Special ids come from, in order: `special_token_ids` / `mask_token_id`, a
    `tokenizer` (`all_special_ids`, `mask_token_id`), the model config. Pass the
    tokenizer's ids when possible: BERT configs only record the pad id.

    Training masks are drawn from a CPU `torch.Generator` owned here (seeded with
    `seed`); its state is part of `state_dict()` (`_extra_state`) and available via
    `get_rng_state`/`set_rng_state`, so a resumed run masks exactly as an
    uninterrupted one. Evaluation uses a fresh generator seeded identically on every
    call, so every arch is scored on the same masks.
    """

    name = "mlm"
    metric_name = "mlm_loss"
    higher_is_better = False

    def __init__(
        self,
        sn: ElasticBert,
        mask_prob: float = 0.15,
        seed: int = 0,
        *,
        mask_token_id: int | None = None,
        special_token_ids: Iterable[int] | None = None,
        tokenizer: Any | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"MLMObjective: mask_prob must be in (0, 1), got {mask_prob}")
        config = sn.config
        vocab = sn.space.vocab_size
        if mask_token_id is None and tokenizer is not None:
            mask_token_id = getattr(tokenizer, "mask_token_id", None)
        if mask_token_id is None:
            mask_token_id = getattr(config, "mask_token_id", None)
        if mask_token_id is None:
            raise ValueError("MLMObjective: needs mask_token_id (pass it, or a tokenizer with a mask token)")
        if not 0 <= mask_token_id < vocab:
            raise ValueError(f"MLMObjective: mask_token_id {mask_token_id} is outside the vocabulary (size {vocab})")
        if special_token_ids is None and tokenizer is not None:
            special_token_ids = getattr(tokenizer, "all_special_ids", None)
        if special_token_ids is None:
            special_token_ids = _config_special_ids(config)
        specials = set(special_token_ids)
        specials.add(int(mask_token_id))
        specials = {int(i) for i in specials if 0 <= int(i) < vocab}
        self.mask_prob = float(mask_prob)
        self.seed = int(seed)
        self.mask_token_id = int(mask_token_id)
        self.special_token_ids = sorted(specials)
        self.vocab_size = vocab
        special = torch.tensor(self.special_token_ids, dtype=torch.long)
        self.register_buffer("_special", special, persistent=False)
        pool = torch.ones(vocab, dtype=torch.bool)
        pool[self.special_token_ids] = False
        if not pool.any():
            raise ValueError("MLMObjective: every vocabulary id is special; nothing to predict")
        self._random_pool = pool.nonzero().squeeze(1)  # CPU: replacement tokens are drawn on CPU
        self._generator = torch.Generator().manual_seed(self.seed)

        # Head: BERT's transform, then a decoder tied to the word embeddings.
        max_hidden = max(sn.space.hidden_choices)
        self.embedding_size = sn.space.embedding_size  # fixed width (ELECTRA) or None (elastic)
        width = self.embedding_size or max_hidden
        self.dense = ElasticLinear(max_hidden, width)
        self.act = ACT2FN[getattr(config, "hidden_act", "gelu")]
        self.LayerNorm = ElasticLayerNorm(width, eps=getattr(config, "layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(vocab))
        std = getattr(config, "initializer_range", 0.02)
        nn.init.normal_(self.dense.weight, std=std)
        nn.init.zeros_(self.dense.bias)

    # ----- RNG state (exact resume) ---------------------------------------
    def get_rng_state(self) -> torch.Tensor:
        return self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self._generator.set_state(state.detach().to("cpu", torch.uint8))

    def get_extra_state(self) -> torch.Tensor:
        return self.get_rng_state()

    def set_extra_state(self, state: Any) -> None:
        self.set_rng_state(torch.as_tensor(state))

    # ----- masking -------------------------------------------------------
    def mask_tokens(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels with -100 at unmasked positions).

        Draws a fixed amount of randomness per batch shape on CPU (`generator`,
        default: the training generator), so masks are reproducible on any device.
        """
        gen = self._generator if generator is None else generator
        ids = batch["input_ids"]
        cpu_ids = ids.detach().cpu()
        eligible = token_mask(batch).cpu() & ~torch.isin(cpu_ids, self._special.cpu())
        shape = cpu_ids.shape
        selected = (torch.rand(shape, generator=gen) < self.mask_prob) & eligible
        kind = torch.rand(shape, generator=gen)
        random_ids = self._random_pool[torch.randint(len(self._random_pool), shape, generator=gen)]
        masked_ids = cpu_ids.clone()
        masked_ids[selected & (kind < 0.8)] = self.mask_token_id
        to_random = selected & (kind >= 0.8) & (kind < 0.9)
        masked_ids[to_random] = random_ids[to_random]
        labels = torch.where(selected, cpu_ids, torch.full_like(cpu_ids, IGNORE_INDEX))
        return masked_ids.to(ids.device), labels.to(ids.device)

    # ----- head ------------------------------------------------------------
    def logits(self, sn: ElasticBert, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states [..., h] of the active width h."""
        width = self.embedding_size or hidden.shape[-1]
        x = self.LayerNorm(self.act(self.dense(hidden, width)))
        weight = sn.embeddings.word_embeddings.weight
        if weight.shape[1] != width:
            weight = weight[:, :width]
        return F.linear(x, weight, self.bias)

    def _masked_ce(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        masked_ids: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """Summed CE over masked tokens, and their count."""
        inputs = model_inputs(batch)
        inputs["input_ids"] = masked_ids
        hidden = sn(**inputs, arch=arch).last_hidden_state
        sel = labels != IGNORE_INDEX
        n = int(sel.sum())
        if n == 0:
            return hidden.sum() * 0.0, 0
        logits = self.logits(sn, hidden[sel]).float()
        return F.cross_entropy(logits, labels[sel], reduction="sum"), n

    # ----- Objective -------------------------------------------------------
    def prepare(self, sn: ElasticBert, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Mask once per step so every subnet of the step sees the same corruption."""
        masked_ids, labels = self.mask_tokens(batch)
        return {"masked_ids": masked_ids, "mlm_labels": labels}

    def loss(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if "masked_ids" not in context:
            context = self.prepare(sn, batch)
        total, n = self._masked_ce(sn, batch, arch, context["masked_ids"], context["mlm_labels"])
        loss = total / max(n, 1)
        return loss, {"mlm": loss.detach().item(), "masked_tokens": float(n)}

    def eval_generator(self) -> torch.Generator:
        """The generator evaluation masks are drawn from (same seed on every call)."""
        return torch.Generator().manual_seed(self.seed + _EVAL_SEED_OFFSET)

    def evaluate(self, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]) -> float:
        """Token-weighted mean CE over the masked tokens of all batches."""
        check_batches("MLMObjective", batches)
        device = module_device(sn)
        gen = self.eval_generator()
        total, count = 0.0, 0
        with evaluation(sn, self):
            for batch in batches:
                batch = to_device(batch, device)
                masked_ids, labels = self.mask_tokens(batch, gen)
                ce, n = self._masked_ce(sn, batch, arch, masked_ids, labels)
                total += float(ce)
                count += n
        if count == 0:
            raise ValueError("MLMObjective.evaluate: no token was masked in the validation batches")
        return total / count

    def unigram_baseline_loss(
        self,
        batches: list[dict[str, torch.Tensor]],
        eval_batches: list[dict[str, torch.Tensor]] | None = None,
        smoothing: float = 1.0,
    ) -> float:
        """CE of predicting every masked token with the unigram distribution of `batches`.

        The distribution counts the real non-special tokens of `batches` (the training
        tokens), add-`smoothing` over the non-special vocabulary; it is scored on the
        tokens that `evaluate` would mask in `eval_batches` (default: `batches`), so
        it is directly comparable with the `mlm_loss` metric. A model that has
        learnt nothing from context scores about this.
        """
        counts = torch.full((self.vocab_size,), float(smoothing), dtype=torch.float64)
        counts[self.special_token_ids] = 0.0
        special = self._special.cpu()
        for batch in batches:
            ids = batch["input_ids"].detach().cpu()
            real = token_mask(batch).cpu() & ~torch.isin(ids, special)
            counts += torch.bincount(ids[real], minlength=self.vocab_size).double()
        if counts.sum() <= 0:
            raise ValueError("unigram_baseline_loss: no training tokens and no smoothing")
        log_p = (counts / counts.sum()).log()
        gen = self.eval_generator()
        total, n = 0.0, 0
        for batch in eval_batches if eval_batches is not None else batches:
            _, labels = self.mask_tokens({k: v.detach().cpu() for k, v in batch.items()}, gen)
            sel = labels[labels != IGNORE_INDEX]
            total += float(-log_p[sel].sum())
            n += sel.numel()
        if n == 0:
            raise ValueError("unigram_baseline_loss: no token was masked in the evaluation batches")
        return total / n
