"""Export a subnet as a standalone Hugging Face model directory.

Archs a vanilla config can express (uniform heads and FFN, heads x head size ==
hidden) become the teacher's own class (BertModel, RobertaModel, ElectraModel).
Others use `MetanasBertModel`, whose code is written beside the weights with an
`auto_map`, so `trust_remote_code=True` loads it where metanas is not installed.
Weights are the supernet's tensors, prefix-sliced to the target model's shapes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from metanas._io import atomic_dir, atomic_write_json
from metanas._paths import shareable
from metanas.space import ArchConfig
from metanas.supernet.families import ROBERTA_POSITION_TYPES
from metanas.supernet.model import ElasticBert
from metanas.supernet.remote.configuration_metanas_bert import MetanasBertConfig
from metanas.supernet.remote.modeling_metanas_bert import MetanasBertModel
from metanas.supernet.rewire import permute_hidden
from metanas.supernet.st_format import write_student_st_files

REMOTE_DIR = Path(__file__).parent / "remote"
REMOTE_FILES = ("configuration_metanas_bert.py", "modeling_metanas_bert.py")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
ARCH_FILE = "metanas_arch.json"

# `AutoModel.from_config(MetanasBertConfig(...))` in this process; loading a directory goes through its auto_map
AutoModel.register(MetanasBertConfig, MetanasBertModel, exist_ok=True)


def is_vanilla(sn: ElasticBert, arch: ArchConfig) -> bool:
    """True when the teacher's own model class can express `arch`."""
    space = sn.space
    return (
        arch.is_uniform
        and arch.heads[0] * space.head_dim == arch.hidden
        and space.embedding_size != arch.hidden  # ELECTRA drops its projection when the sizes agree
    )


def subnet_config(sn: ElasticBert, arch: ArchConfig) -> PretrainedConfig:
    """The HF config of the standalone model for `arch` (vanilla class when possible)."""
    base = sn.config.to_dict()
    for key in ("architectures", "_name_or_path", "transformers_version", "auto_map", "dtype", "torch_dtype"):
        base.pop(key, None)
    if is_vanilla(sn, arch):
        base.update(
            hidden_size=arch.hidden,
            num_hidden_layers=arch.depth,
            num_attention_heads=arch.heads[0],
            intermediate_size=arch.ffn[0],
        )
        if sn.config.model_type == "electra":
            base["embedding_size"] = sn.space.embedding_size or arch.hidden
        config = AutoConfig.for_model(**base)
        return config
    space = sn.space
    return MetanasBertConfig(
        vocab_size=space.vocab_size,
        hidden_size=arch.hidden,
        num_hidden_layers=arch.depth,
        layer_heads=list(arch.heads),
        layer_intermediate_sizes=list(arch.ffn),
        attention_head_size=space.head_dim,
        embedding_size=space.embedding_size,
        hidden_act=sn.config.hidden_act,
        hidden_dropout_prob=sn.config.hidden_dropout_prob,
        attention_probs_dropout_prob=sn.config.attention_probs_dropout_prob,
        max_position_embeddings=space.max_position_embeddings,
        type_vocab_size=space.type_vocab_size,
        layer_norm_eps=sn.config.layer_norm_eps,
        pad_token_id=sn.config.pad_token_id if sn.config.pad_token_id is not None else 0,
        position_style="roberta" if sn.config.model_type in ROBERTA_POSITION_TYPES else "bert",
        add_pooling_layer=space.has_pooler,
        auto_map={
            "AutoConfig": "configuration_metanas_bert.MetanasBertConfig",
            "AutoModel": "modeling_metanas_bert.MetanasBertModel",
        },
        architectures=["MetanasBertModel"],
    )


_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def supernet_name(name: str, kept: tuple[int, ...]) -> str:
    """The supernet parameter behind the exported model's `name`: its layer j is `kept[j]` (the j-th kept layer)."""
    m = _LAYER.match(name)
    if m is None:
        return name
    return f"encoder.layer.{kept[int(m.group(1))]}.{name[m.end() :]}"


def channel_order(sn: ElasticBert, arch: ArchConfig) -> torch.Tensor | None:
    """How the exported model's hidden channels are ordered from the supernet's first `arch.hidden` ones.

    After hidden rewiring the supernet's channel k is the teacher's channel `hidden_order[k]`;
    exporting the kept channels sorted by teacher channel gives the largest arch the teacher's
    exact channel order (a drop-in replacement for its vectors) and a narrower one the
    teacher's order restricted to what it keeps. None when the supernet is not hidden-rewired.
    """
    if sn.hidden_order is None:
        return None
    return torch.argsort(torch.tensor(sn.hidden_order[: arch.hidden]), stable=True)


def build_subnet_model(sn: ElasticBert, arch: ArchConfig) -> PreTrainedModel:
    """A standalone model for `arch` holding the supernet's prefix-sliced weights of the layers it keeps."""
    sn.space.runnable.validate(arch)
    config = subnet_config(sn, arch)
    model = AutoModel.from_config(config)
    ours, kept = dict(sn.named_parameters()), sn.space.layer_indices(arch)
    state: dict[str, torch.Tensor] = {}
    for name, target in model.named_parameters():
        src = ours.get(supernet_name(name, kept))
        if src is None:
            raise RuntimeError(f"export: the supernet has no parameter for {name}")
        state[name] = src.detach()[tuple(slice(0, n) for n in target.shape)].clone()
    order = channel_order(sn, arch)
    if order is not None:
        permute_hidden(state, order, sn.space.embedding_size is None)
    model.load_state_dict(state, strict=False)
    missing = set(dict(model.named_parameters())) - set(state)
    if missing:
        raise RuntimeError(f"export: no weights for {sorted(missing)[:5]}")
    return model.eval()


# Options of the call that loaded the tokenizer, which `save_pretrained` writes into tokenizer_config.json:
# a user's plain `AutoTokenizer.from_pretrained(export_dir)` must not inherit them (local_files_only
# would stop a hub-backed reload; the others name this machine or a download).
LOADING_OPTIONS = (
    "local_files_only", "is_local", "cache_dir", "token", "use_auth_token", "revision", "trust_remote_code",
    "proxies", "force_download", "subfolder", "_from_auto", "_commit_hash", "device_map", "name_or_path",
    "tokenizer_file",
)  # fmt: skip


def clean_tokenizer_config(target: Path) -> None:
    """Drop loading options (`LOADING_OPTIONS`) from `target/tokenizer_config.json`, if there is one."""
    path = target / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    kept = {k: v for k, v in config.items() if k not in LOADING_OPTIONS}
    if kept != config:
        atomic_write_json(kept, path)


def names_tokenizer_class(target: Path) -> bool:
    """True when `target/tokenizer_config.json` says which tokenizer class to build (`tokenizer_class`).

    Without it `AutoTokenizer` takes the class from the model's config.json, and a non-uniform
    student's config names metanas' own model type, which maps to no tokenizer: transformers 5
    then builds a generic tokenizer, or none at all from a bare vocab.txt, and transformers 4
    reads that config (and asks whether to run its custom code) instead of loading the tokenizer.
    """
    path = target / "tokenizer_config.json"
    return path.is_file() and bool(json.loads(path.read_text()).get("tokenizer_class"))


def _save_tokenizer(sn: ElasticBert, tokenizer: Any, target: Path) -> None:
    if tokenizer is not None:
        tokenizer.save_pretrained(target)
        clean_tokenizer_config(target)
        return
    source = sn.source
    if source and Path(source).is_dir():
        copied = [f for f in TOKENIZER_FILES if (Path(source) / f).is_file()]
        if not copied:
            raise FileNotFoundError(f"export: no tokenizer files in the teacher directory {source}")
        for f in copied:
            shutil.copy2(Path(source) / f, target / f)
        if not names_tokenizer_class(target):  # an older teacher (bare vocab.txt): save it as transformers loads it
            AutoTokenizer.from_pretrained(source, config=sn.config).save_pretrained(target)
    elif source:
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
    else:
        raise ValueError("export: the supernet has no teacher path to copy tokenizer files from; pass tokenizer=")
    clean_tokenizer_config(target)


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse, before writing anything, to put a model where it would destroy something.

    A new or empty directory is fine; an existing export (it holds `metanas_arch.json`)
    is replaced only with `overwrite`; anything else (a file, a run directory, a
    directory of the user's own files) is never replaced.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"export: {str(out)!r} is a file, not a model directory; choose a new directory")
    if not any(out.iterdir()):
        return
    if not (out / ARCH_FILE).is_file():
        raise ValueError(
            f"export: {str(out)!r} holds files metanas did not export (it has no {ARCH_FILE}), so it is never "
            "replaced, with or without overwrite; choose a new or empty directory"
        )
    if not overwrite:
        raise FileExistsError(f"export: {out} already exists (an exported model); pass overwrite=True to replace it")


def export(
    sn: ElasticBert,
    arch: ArchConfig,
    out_dir: str | os.PathLike,
    *,
    tokenizer: Any = None,
    overwrite: bool = False,
    extra_info: dict[str, Any] | None = None,
) -> Path:
    """Write `arch` of `sn` as a model directory loadable by `AutoModel.from_pretrained`.

    Everything is written into a temporary sibling directory first and renamed into
    place at the end, so a failure never leaves a half-written `out_dir`.
    """
    out = Path(out_dir)
    check_replaceable(out, overwrite)
    with atomic_dir(out, overwrite=True) as tmp:
        write_model_dir(sn, arch, tmp, tokenizer=tokenizer, extra_info=extra_info)
    return out


def write_model_dir(
    sn: ElasticBert,
    arch: ArchConfig,
    target: Path,
    *,
    tokenizer: Any = None,
    extra_info: dict[str, Any] | None = None,
) -> None:
    """The files of the exported model for `arch` in the (new, empty) directory `target`.

    Not atomic by itself: `export` calls it inside a temporary directory, and so does a
    caller that changes the model further before moving it into place.
    """
    model = build_subnet_model(sn, arch)
    model.save_pretrained(target, safe_serialization=True)
    if isinstance(model.config, MetanasBertConfig):
        for f in REMOTE_FILES:
            shutil.copy2(REMOTE_DIR / f, target / f)
    _save_tokenizer(sn, tokenizer, target)
    write_student_st_files(sn.source, target, hidden=model.config.hidden_size, teacher_hidden=sn.config.hidden_size)
    info = {
        "arch": arch.to_dict(),
        "space_signature": sn.space.signature(),
        "teacher": shareable(sn.source),
        "params": sn.space.params(arch),
        "teacher_layers": list(sn.space.layer_indices(arch)),
        "vanilla": not isinstance(model.config, MetanasBertConfig),
        **(extra_info or {}),
    }
    atomic_write_json(info, target / ARCH_FILE)


def load_subnet_weights(sn: ElasticBert, arch: ArchConfig, model: nn.Module) -> None:
    """Write a standalone model's weights into the prefix slices `arch` uses in `sn` (the inverse of export).

    Lets an objective's trained head (MLM decoder, classifier) score a model whose
    weights changed after export (final distillation) through the supernet forward,
    which computes the same function as the exported model.
    """
    sn.space.runnable.validate(arch)
    ours, kept = dict(sn.named_parameters()), sn.space.layer_indices(arch)
    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    order = channel_order(sn, arch)
    if order is not None:  # back from the teacher's channel order to the supernet's
        permute_hidden(state, torch.argsort(order), sn.space.embedding_size is None)
    with torch.no_grad():
        for name, p in state.items():
            target = ours.get(supernet_name(name, kept))
            if target is None:
                raise ValueError(f"the model has a parameter {name} that the supernet lacks")
            target[tuple(slice(0, n) for n in p.shape)].copy_(p)
