"""Conversion of Hugging Face BERT-like checkpoints into an ElasticBert supernet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from metanas.space import SearchSpace
from metanas.supernet.model import ElasticBert

# model_type values whose base model has the BERT layout (same parameter names).
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


class TeacherLoadError(ValueError):
    """A teacher checkpoint that cannot become a supernet; the message says why."""


def check_supported(config: PretrainedConfig) -> None:
    """Raise `TeacherLoadError` unless `config` is a BERT-like encoder we can convert."""
    model_type = getattr(config, "model_type", None)
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


def _looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else with a separator is a local path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def load_teacher_config(source: str | os.PathLike) -> PretrainedConfig:
    """Load and check a teacher's config from a directory or hub id, with clear errors."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise TeacherLoadError(f"teacher directory {str(path)!r} has no config.json")
    if not path.exists() and _looks_like_path(str(source)):
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


def supernet_from_teacher(teacher: Any, space_overrides: dict[str, Any]) -> ElasticBert:
    """Copy a teacher's weights into a new supernet whose largest arch is the teacher."""
    source = None
    if isinstance(teacher, (str, os.PathLike)):
        source = str(teacher)
        teacher = load_teacher_model(teacher)
    if not isinstance(teacher, PreTrainedModel):
        raise TypeError(f"teacher must be a path, hub id or PreTrainedModel, got {type(teacher).__name__}")
    check_supported(teacher.config)
    base = getattr(teacher, teacher.base_model_prefix, teacher) if teacher.base_model_prefix else teacher
    space = SearchSpace.from_teacher_config(teacher.config, **space_overrides)
    sn = ElasticBert(teacher.config, space)
    sn.source = source or getattr(teacher, "name_or_path", None) or None
    load_teacher_weights(sn, base)
    return sn.eval()


def load_teacher_weights(sn: ElasticBert, base: torch.nn.Module) -> None:
    """Copy parameters by name; the supernet mirrors HF's names so every key must match."""
    ours = dict(sn.named_parameters())
    theirs = {k: v for k, v in base.named_parameters()}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise TeacherLoadError(
            f"teacher weights do not match the BERT layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, p in ours.items():
            src = theirs[name]
            if src.shape != p.shape:
                raise TeacherLoadError(f"teacher weight {name} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
            p.copy_(src.to(p.dtype))
