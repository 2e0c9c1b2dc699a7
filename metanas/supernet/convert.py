"""Loading and checking Hugging Face BERT-like teachers (config and weights), with clear errors.

`ElasticBert.from_teacher` builds the supernet from what this module loads; this
module itself knows nothing of the supernet.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from metanas._paths import is_hub_id
from metanas.supernet.families import SUPPORTED_MODEL_TYPES


class TeacherLoadError(ValueError):
    """A teacher checkpoint that cannot become a supernet; the message says why."""


def check_supported(config: PretrainedConfig) -> None:
    """Raise `TeacherLoadError` unless `config` is a BERT-like encoder we can convert."""
    model_type = getattr(config, "model_type", None)
    if getattr(config, "layer_heads", None) is not None:  # config.json says bert; its layers say otherwise
        raise TeacherLoadError(
            "this is a metanas student whose layers differ in heads or FFN size (MetanasBertModel); a teacher must "
            f"be a uniform BERT-like model of a supported type ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise TeacherLoadError(
            f"model_type {model_type!r} is not supported; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    pet = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if pet != "absolute":
        raise TeacherLoadError(f"position_embedding_type {pet!r} is not supported; only 'absolute' is")
    if config.hidden_size % config.num_attention_heads:
        raise TeacherLoadError(
            f"hidden_size {config.hidden_size} is not divisible by num_attention_heads {config.num_attention_heads}"
        )


def load_teacher_config(source: str | os.PathLike) -> PretrainedConfig:
    """Load and check a teacher's config from a directory or hub id, with clear errors."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise TeacherLoadError(f"teacher directory {str(path)!r} has no config.json")
    if not path.exists() and not is_hub_id(str(source)):
        raise TeacherLoadError(f"teacher path {str(path)!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise TeacherLoadError(f"cannot load a config from {str(source)!r}: {str(e).splitlines()[0]}") from None
    check_supported(config)
    return config


def load_teacher_model(source: str | os.PathLike) -> PreTrainedModel:
    """Load the base encoder (no task head) of a supported checkpoint, in fp32 eval mode."""
    config = load_teacher_config(source)
    try:
        model, info = AutoModel.from_pretrained(
            str(source), config=config, dtype=torch.float32, output_loading_info=True
        )
    except Exception as e:  # safetensors and torch raise many types for a damaged file
        raise TeacherLoadError(
            f"cannot load weights from {str(source)!r} (is model.safetensors complete and uncorrupted?): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    missing = sorted(k for k in info.get("missing_keys", []) if not k.startswith("pooler."))
    if missing:
        raise TeacherLoadError(
            f"checkpoint {str(source)!r} lacks {len(missing)} encoder weights (e.g. {missing[0]}); "
            "it is not a complete BERT-like model"
        )
    return model.eval()
