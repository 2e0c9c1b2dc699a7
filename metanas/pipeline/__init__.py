"""`metanas compress`: teacher -> supernet -> search under a budget -> standalone student -> report.

The pipeline is five stages, each a record in `stages` (its recipe keys, the
stages it consumes, its outputs, its function), run in order by `run.CompressRun`:

1. `latency`: the latency model the search needs and the latency budget's
   feasibility, checked before any training (skipped without a latency budget);
2. `train`: convert and rewire the teacher, train the supernet (`train/`);
3. `search`: the search under the budget (`search/`), warm-started by the
   meta-predictor when one is available;
4. `export`: the best arch and the uniform-shrink baseline as standalone models
   (`model/`, `baseline/`), each latency-checked (`verify`) and optionally distilled;
5. `report`: teacher, student and baseline measured side by side (`reporting`).

Each stage is recorded in `stages.json` (`stagelog`) only once its outputs are
complete, with a fingerprint of the recipe keys it depends on. Rerunning
`compress` on the same directory skips completed stages with matching
fingerprints; a changed recipe is refused for a stage already started (naming the
keys), except that `export.overwrite=true` redoes every stage after training.
Ctrl-C stops cleanly: completed stages are kept, the interrupted one resumes.
`plan` is the dry run; `tiny` writes the tiny teacher of CI smoke runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from metanas._io import read_json
from metanas.config import Recipe
from metanas.pipeline.paths import MODEL_DIR, SEARCH_DIR, STAGES_FILE, TRAIN_DIR
from metanas.pipeline.plan import plan
from metanas.pipeline.run import CompressInterrupted, CompressResult, CompressRun
from metanas.pipeline.stagelog import StageLog
from metanas.pipeline.stages import STAGES
from metanas.report import REPORT_JSON
from metanas.search.runner import RESULT_FILE
from metanas.space import ArchConfig
from metanas.supernet.export import export
from metanas.training import SUPERNET_FILE, load_trained_supernet

__all__ = [
    "STAGES",
    "CompressInterrupted",
    "CompressResult",
    "CompressRun",
    "compress",
    "export_arch",
    "find_train_dir",
    "plan",
    "search_only",
]


def compress(recipe: Recipe, run_dir: str | os.PathLike) -> CompressResult:
    """Run (or resume) every stage of `recipe` in `run_dir` and return the report."""
    run = CompressRun(recipe, run_dir)
    run.run()
    path = run.run_dir / REPORT_JSON
    return CompressResult(run.run_dir, json.loads(path.read_text(encoding="utf-8")), path, run.run_dir / MODEL_DIR)


def find_train_dir(run_dir: Path) -> Path:
    """Where a run directory keeps its trained supernet: `train/` of a compress run, or the dir itself."""
    for candidate in (run_dir / TRAIN_DIR, run_dir):
        if (candidate / SUPERNET_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no trained supernet in {str(run_dir)!r} (looked for {TRAIN_DIR}/{SUPERNET_FILE} and {SUPERNET_FILE}); "
        "run `metanas compress` or `metanas train-supernet` first"
    )


def search_only(recipe: Recipe, run_dir: str | os.PathLike) -> dict[str, Any]:
    """The search stage alone on a run dir holding a trained supernet (a compress or a train-supernet run).

    A finished search with the same settings is reported, not repeated; one with
    other settings is replaced (the later stages of a compress run are then redone
    by the next `compress`).
    """
    run_dir = Path(run_dir)
    train_dir = find_train_dir(run_dir)
    run = CompressRun(recipe, run_dir, train_dir=train_dir)
    if train_dir == run_dir / TRAIN_DIR:
        log = StageLog(run_dir / STAGES_FILE)
        if not log.done("train"):
            raise ValueError(f"the train stage of {str(run_dir)!r} has not finished; resume it with `metanas compress`")
    log = run.run(stages=("latency", "search"), redo=("latency", "search", "export", "report"))
    return log.info("search")


def export_arch(run_dir: str | os.PathLike, arch: ArchConfig | None, out: str | os.PathLike, overwrite: bool) -> Path:
    """Export `arch` (default: the search's best) of the supernet trained in `run_dir` to `out`."""
    run_dir = Path(run_dir)
    trained = load_trained_supernet(find_train_dir(run_dir))
    if arch is None:
        path = run_dir / SEARCH_DIR / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no search result at {str(path)!r}; run `metanas search` first or pass --arch")
        arch = ArchConfig.from_dict(read_json(path, "run `metanas search` again")["best"]["arch"])
    trained.supernet.space.validate(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(trained.tokenizer_path))
    try:
        return export(trained.supernet, arch, out, tokenizer=tokenizer, overwrite=overwrite)
    except FileExistsError as e:
        raise ValueError(f"{e} (pass --overwrite)") from None
