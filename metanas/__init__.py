"""metanas: compress BERT-like transformers to a budget by weight-sharing NAS."""

from metanas.space import ArchConfig, SearchSpace

__all__ = ["ArchConfig", "SearchSpace", "ElasticBert", "export"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # torch-heavy parts load lazily so `metanas --help` and space maths stay quick.
    if name == "ElasticBert":
        from metanas.supernet.model import ElasticBert

        return ElasticBert
    if name == "export":
        from metanas.supernet.export import export

        return export
    raise AttributeError(f"module 'metanas' has no attribute {name!r}")
