"""Facts about the checkpoint families metanas converts, shared by conversion, export and data checks."""

from __future__ import annotations

from typing import Any

# model_type values whose base model has the BERT layout (same parameter names).
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
# Families whose position ids start after the padding index (RoBERTa's scheme).
ROBERTA_POSITION_TYPES = ("roberta", "xlm-roberta", "camembert")
# Batch keys the encoder's forward takes; everything else in a batch (labels) belongs to a head.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def usable_positions(config: Any) -> int | None:
    """How many tokens a sequence may have: RoBERTa-style models lose pad_token_id + 1 positions."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    if getattr(config, "model_type", None) in ROBERTA_POSITION_TYPES:
        pad = getattr(config, "pad_token_id", None)
        return positions - ((1 if pad is None else pad) + 1)
    return positions
