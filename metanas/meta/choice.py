"""Which meta-predictor a warm-started search uses: `auto`, `off` or a file, said in one line.

`auto` takes the predictor shipped inside the package (or `$METANAS_META_PREDICTOR`)
when it exists and loads, and otherwise searches cold with a warning; an explicit
PATH that cannot be used is an error, never a silent cold start.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from metanas._paths import shareable
from metanas.meta.encoding import task_embedding_dim
from metanas.meta.predictor import MetaPredictor

logger = logging.getLogger(__name__)

PREDICTOR_FILE = "meta_predictor.safetensors"
PREDICTOR_ENV_VAR = "METANAS_META_PREDICTOR"
ENCODING_KEYS = ("anchor_k", "anchor_seed", "max_layers", "seq_len")


def shipped_predictor_path() -> Path:
    """The predictor installed with metanas as package data (`metanas/checkpoints/`)."""
    return Path(str(resources.files("metanas") / "checkpoints" / PREDICTOR_FILE))


def default_predictor_path() -> Path:
    """`$METANAS_META_PREDICTOR`, else the predictor shipped with the package."""
    env = os.environ.get(PREDICTOR_ENV_VAR)
    return Path(env).expanduser() if env else shipped_predictor_path()


def file_sha256(path: str | os.PathLike) -> str:
    """Digest of a predictor file: a resumed search checks it still uses the same one."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_warm_predictor(path: str | os.PathLike) -> MetaPredictor:
    """Load a meta-predictor and check it records the encoding a search needs (anchors, features).

    Raises FileNotFoundError for a missing file and ValueError for a damaged file, a
    file of another format version, or one whose task dimension does not match its
    recorded anchor count.
    """
    predictor = MetaPredictor.load(path)
    missing = [k for k in ENCODING_KEYS if k not in predictor.encoding]
    if missing:
        raise ValueError(
            f"predictor file {path} records no {', '.join(missing)} in its encoding, so a search cannot rebuild "
            "its anchors and features; retrain it with metanas.meta.metatrain.meta_train"
        )
    want = task_embedding_dim(int(predictor.encoding["anchor_k"]))
    if predictor.task_dim != want:
        raise ValueError(
            f"predictor file {path} expects {predictor.task_dim} task features, but its "
            f"{predictor.encoding['anchor_k']} anchors give {want} in this metanas; retrain it"
        )
    return predictor


@dataclass(frozen=True)
class WarmStartChoice:
    """What `resolve_warm_start` decided: a predictor (None: search cold), its file and digest, and why."""

    predictor: MetaPredictor | None
    path: Path | None
    sha256: str | None
    message: str

    @property
    def active(self) -> bool:
        return self.predictor is not None


def resolve_warm_start(warm_start: str | os.PathLike) -> WarmStartChoice:
    """Turn `"auto" | "off" | PATH` into a predictor, logging which one a search will use.

    `auto`: the default predictor (`default_predictor_path()`) when it exists and
    loads; plain evolution when it does not exist (info) or cannot be used (a warning
    naming the problem). `off`: plain evolution. A PATH must load: a missing, damaged
    or incompatible file raises.
    """
    requested = str(warm_start)
    if requested == "off":
        message = "warm start off: plain evolution"
        logger.info(message)
        return WarmStartChoice(None, None, None, message)
    if requested == "auto":
        path = default_predictor_path()
        if not path.is_file():
            message = f"warm start auto: no default predictor at {shareable(path)}; plain evolution"
            logger.info(message)
            return WarmStartChoice(None, None, None, message)
        try:
            predictor = load_warm_predictor(path)
        except ValueError as e:
            message = f"warm start auto: the default predictor cannot be used ({e}); continuing cold (plain evolution)"
            logger.warning(message)
            return WarmStartChoice(None, path, None, message)
    else:
        path = Path(requested).expanduser()
        predictor = load_warm_predictor(path)
    card = predictor.card
    message = (
        f"warm start from {shareable(path)} (meta-trained on {len(card.get('tasks', []))} tasks, "
        f"held-out Kendall tau {card.get('val_kendall_tau')})"
    )
    logger.info(message)
    return WarmStartChoice(predictor, path, file_sha256(path), message)
