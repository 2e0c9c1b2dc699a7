"""metanas: compress BERT-like transformers to a budget by weight-sharing NAS.

The public Python API (everything torch-heavy loads on first use, so `metanas --help`
and space maths stay quick):

- `compress(recipe, run_dir)`: the whole pipeline; `load_recipe(path)` / `Recipe`;
- `ArchConfig`, `SearchSpace`: subnets and the space of them, costs by formula;
- `ElasticBert`: the supernet (`ElasticBert.from_teacher(path)`), `export(sn, arch, dir)`;
- `train_supernet(recipe, run_dir)` and `run_search(...)`: two stages on their own.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from metanas._lazy import lazy_attributes
from metanas.space import ArchConfig, SearchSpace

try:
    __version__ = version("metanas")  # the one place it is written is pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "ElasticBert": "metanas.supernet.model",
    "export": "metanas.supernet.export",
    "compress": "metanas.pipeline",
    "CompressResult": "metanas.pipeline",
    "Recipe": "metanas.config",
    "load_recipe": "metanas.config",
    "train_supernet": "metanas.training",
    "run_search": "metanas.search.runner",
}

__all__ = ["ArchConfig", "SearchSpace", *_LAZY]
__getattr__ = lazy_attributes(__name__, _LAZY)
