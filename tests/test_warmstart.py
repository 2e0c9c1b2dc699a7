"""Warm start of the search from the meta-predictor (offline, seeded).

Predictors are meta-trained in-process on a synthetic task family: fitness is a
smooth function of the arch whose per-layer weighting depends on a task latent
(tasks with close latents rank archs alike). One test searches a tiny trained
supernet end to end through `run_search`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file
from synthetic import drive, minilm_space, synthetic_evaluator, trained_tiny_evaluator

from metanas.cost import Budget, CostModel
from metanas.evaluate import Evaluator
from metanas.meta.anchors import anchor_archs
from metanas.meta.choice import PREDICTOR_ENV_VAR, resolve_warm_start
from metanas.meta.history import EvalRecord, HistoryStore
from metanas.meta.metatrain import anchor_subset_variants, meta_train, variant_task
from metanas.search import Evolution, WarmStartEvolution
from metanas.search.runner import RESULT_FILE, STATE_FILE, run_search
from metanas.search.warm import TransferGuard, diverse_top, source_tasks, task_similarity, transferred_incumbents
from metanas.space import ArchConfig, SearchSpace
from metanas.tracking import Tracker, read_metrics

SPACE = minilm_space()
BUDGET = {"non_embedding_params": "40%"}
# Task latents: the target sits among the sources, so transfer should help.
SOURCES = {"src0": (0.8, -0.6), "src1": (0.6, -0.9), "src2": (-0.7, 0.8), "src3": (0.9, -0.3), "src4": (-0.2, 0.1)}
TARGET = (0.7, -0.5)
SEARCH = {"population_size": 12, "generations": 4, "parents": 4, "pool_size": 400, "candidate_factor": 6}


def synthetic_fitness(space: SearchSpace, arch: ArchConfig, z: tuple[float, float]) -> float:
    """Bigger is better with diminishing returns; z[0] moves head value between lower and upper layers, z[1] the
    FFN value the other way, so under a budget the best allocation depends on the task."""
    gain = 3.0 * math.log(arch.hidden)
    for i, (h, f) in enumerate(zip(arch.heads, arch.ffn)):
        t = i / max(1, space.max_depth - 1)
        gain += (1.0 + z[0] * (0.5 - t)) * math.log(h) + (0.8 + z[1] * (t - 0.5)) * math.log(f / min(space.ffn_choices))
    return gain - 60.0


def family(space: SearchSpace, n: int, shuffle: bool = False) -> dict[str, list[EvalRecord]]:
    """Anchor + random records of every source task (fitness shuffled within each task when `shuffle`)."""
    cm = CostModel(space)
    anchors = anchor_archs(space)
    out = {}
    for t, (task, z) in enumerate(SOURCES.items()):
        rng = random.Random(t)
        archs = anchors + [space.sample(rng) for _ in range(n)]
        fitness = [synthetic_fitness(space, a, z) for a in archs]
        if shuffle:
            random.Random(100 + t).shuffle(fitness)
        out[task] = [
            EvalRecord(
                run_id=f"run-{task}",
                task_id=task,
                space_signature=space.signature(),
                arch=a,
                fitness=f,
                metric_name="kd_loss",
                metric_value=-f,
                origin="anchor" if i < len(anchors) else "random",
                task_meta={"objective": "kd"},
                **cm.costs(a),
            )
            for i, (a, f) in enumerate(zip(archs, fitness))
        ]
    return out


def train_predictor(records: dict[str, list[EvalRecord]], space: SearchSpace, path: Path) -> Path:
    meta_train(records, [space], val_tasks=0.0, epochs_grid=(120,), weight_decay_grid=(1e-4,), out_path=path)
    return path


@pytest.fixture(scope="module")
def predictors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Predictors meta-trained on the synthetic family, with true and with shuffled scores."""
    root = tmp_path_factory.mktemp("predictors")
    good, shuffled = family(SPACE, 120), family(SPACE, 120, shuffle=True)
    return {
        "good": train_predictor(good, SPACE, root / "good.safetensors"),
        "shuffled": train_predictor(shuffled, SPACE, root / "shuffled.safetensors"),
        "records": good,
        "shuffled_records": shuffled,
    }


def feasibility(space: SearchSpace) -> tuple[CostModel, Budget]:
    cm = CostModel(space, seq_len=128)
    return cm, cm.check_feasible(Budget(**BUDGET))


def cold_evolution(seed: int) -> Evolution:
    cm, budget = feasibility(SPACE)
    return Evolution(
        SPACE,
        lambda a: cm.feasible(a, budget),
        seed,
        population_size=SEARCH["population_size"],
        generations=SEARCH["generations"],
        parents=SEARCH["parents"],
        sampler=lambda r: cm.sample_feasible(r, budget, 200),
    )


def warm(space: SearchSpace, seed: int, warm_start: str, sources: list[EvalRecord] | None = None, **kw: Any) -> Any:
    cm, budget = feasibility(space)
    strategy = WarmStartEvolution(
        space,
        lambda a: cm.feasible(a, budget),
        seed,
        sampler=lambda r: cm.sample_feasible(r, budget, 200),
        warm_start=warm_start,
        task_meta={"objective": "kd", "higher_is_better": True, "seq_len": 128},
        **{**SEARCH, **kw},
    )
    if sources is not None:
        strategy.add_sources(sources)
    return strategy


# --------------------------------------------------------------------------- parts


def test_guard_transitions() -> None:
    fit = list(range(10))
    good, bad = fit, fit[::-1]
    g = TransferGuard(patience=2, plain_tau=0.1)
    assert g.update(1, fit, good, bad, None)["decision"] == "keep" and g.strikes == 1 and g.wants_target_model
    assert g.update(2, fit, good, good, None)["decision"] == "keep" and g.strikes == 0  # a win resets
    g.update(3, fit, good, bad, None)
    entry = g.update(4, fit, good, bad, good)
    assert entry["decision"] == "fallback:target" and g.mode == "target"
    assert entry["tau_target_only"] == pytest.approx(1.0)
    g.update(5, fit, good, bad, bad)
    assert g.update(6, fit, good, bad, bad)["decision"] == "fallback:evolution" and g.mode == "evolution"
    # Two losses with a useless target-only model go straight to plain evolution.
    g = TransferGuard(patience=2)
    g.update(1, fit, good, bad, None)
    assert g.update(2, fit, good, bad, bad)["decision"] == "fallback:evolution"


def test_incumbents_similarity_variants_and_diversity() -> None:
    records = family(SPACE, 30)
    anchors = anchor_archs(SPACE)
    sources = source_tasks([r for recs in records.values() for r in recs], anchors)
    target = {a: synthetic_fitness(SPACE, a, TARGET) for a in anchors}
    cm, budget = feasibility(SPACE)

    def feasible(a: ArchConfig) -> bool:
        return cm.feasible(a, budget)

    picks = transferred_incumbents(sources, target, 4, feasible, n_tasks=2)
    sims = {s.task_id: task_similarity(target, s.anchor_fitness) for s in sources}
    closest = sorted(sims, key=lambda t: -sims[t])[:2]
    assert closest[0] == "src0" and {t for _, t, _ in picks} == set(closest)  # round robin over the two closest
    assert len({a for a, _, _ in picks}) == 4 and all(feasible(a) for a, _, _ in picks)
    assert picks[0][0] == next(a for a, _ in sources[0].ranked if feasible(a)) and picks[0][2] == sims["src0"] > 0.9
    assert transferred_incumbents(sources, {}, 3, feasible) == []  # no common anchors: no similarity

    variants = anchor_subset_variants(records, anchors, SPACE, (0.4,))
    assert {variant_task(v) for v in variants} == set(SOURCES) and len(variants) == 2 * len(SOURCES)
    full, small = variants["src0@full"], variants["src0@nonemb40"]
    assert {r.task_id for r in small} == {"src0@nonemb40"}
    assert sum(r.origin == "anchor" for r in full) == len(anchors) > sum(r.origin == "anchor" for r in small) > 0
    others = [r for r in full + small if r.origin != "anchor"]
    assert len(others) == len({r.arch for r in others}) == 30  # the random rows are dealt out, not copied

    feats = np.array([[0.0], [0.1], [1.0], [2.0]])
    assert diverse_top(np.array([4.0, 3.0, 2.0, 1.0]), feats, 3, 0.5) == [0, 2, 3]
    assert diverse_top(np.array([4.0, 3.0, 2.0, 1.0]), feats, 4, 5.0) == [0, 1, 2, 3]  # the rule never shrinks


@pytest.mark.slow
def test_warm_start_beats_cold_and_the_guard_falls_back_on_shuffled_sources(predictors: dict[str, Any]) -> None:
    cm, budget = feasibility(SPACE)
    sources = [r for recs in predictors["records"].values() for r in recs]
    shuffled = [r for recs in predictors["shuffled_records"].values() for r in recs]

    def fitness(a: ArchConfig) -> float:
        return synthetic_fitness(SPACE, a, TARGET)

    early = {"warm": [], "cold": []}
    for seed in range(3):
        trace = [fitness(a) for a in drive(warm(SPACE, seed, str(predictors["good"]), sources), fitness)]
        early["warm"].append(max(trace[:30]))
        early["cold"].append(max([fitness(a) for a in drive(cold_evolution(seed), fitness)][:30]))

        bad = warm(SPACE, seed, str(predictors["shuffled"]), shuffled)
        drive(bad, fitness)
        decisions = [e["decision"] for e in bad.transfer_log if e["event"] == "guard"]
        assert bad.mode != "meta" and any(d.startswith("fallback:") for d in decisions), bad.transfer_log
        fallback = next(e for e in bad.transfer_log if e.get("decision", "").startswith("fallback:"))
        assert fallback["tau_predictor"] < fallback["tau_params_proxy"]
    assert min(early["warm"]) > max(early["cold"]), early


def test_auto_without_a_default_is_plain_evolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(tmp_path / "missing.safetensors"))
    with caplog.at_level(logging.INFO, logger="metanas.meta.choice"):
        strategy = warm(SPACE, 4, "auto")
    assert "no default predictor" in caplog.text and "plain evolution" in caplog.text
    assert strategy.mode == "evolution" and strategy.base is None
    assert strategy.transfer_log[0]["message"].startswith("warm start auto: no default predictor")
    plain = cold_evolution(4)

    def fitness(a: ArchConfig) -> float:
        return synthetic_fitness(SPACE, a, TARGET)

    assert drive(strategy, fitness) == drive(plain, fitness)  # the same proposals, seed for seed

    result = run_search(
        target_evaluator(),
        SPACE,
        CostModel(SPACE),
        BUDGET,
        "warm_evolution",
        {"population_size": 6, "generations": 2, "parents": 2},
        tmp_path / "run",
    )
    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert report["transfer"][0]["mode"] == "evolution" and "no default predictor" in report["transfer"][0]["message"]
    assert result.num_evaluations == 12 and {e["origin"] for e in report["pareto_front"]} <= {"random", "evolved"}


@pytest.mark.slow
def test_damaged_or_incompatible_predictor_files(
    predictors: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file at all" * 10)
    with safe_open(str(predictors["good"]), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    future = tmp_path / "future.safetensors"
    save_file(tensors, str(future), metadata={**meta, "version": "99"})

    with pytest.raises(ValueError, match="damaged"):
        resolve_warm_start(damaged)
    with pytest.raises(ValueError, match="format version 99"):
        warm(SPACE, 0, str(future))
    with pytest.raises(FileNotFoundError):
        warm(SPACE, 0, str(tmp_path / "nowhere.safetensors"))
    for path, reason in ((damaged, "damaged"), (future, "version 99")):
        monkeypatch.setenv(PREDICTOR_ENV_VAR, str(path))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="metanas.meta.choice"):
            strategy = warm(SPACE, 0, "auto")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and reason in warnings[0].getMessage() and "continuing cold" in caplog.text
        assert strategy.base is None and strategy.mode == "evolution" and reason in strategy.transfer_log[0]["message"]
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(predictors["good"]))
    assert resolve_warm_start("auto").active and not resolve_warm_start("off").active


# --------------------------------------------------------------------------- through the runner


def target_loss(arch: ArchConfig) -> float:
    """The loss the runner minimises on the target task: minus its synthetic fitness."""
    return -synthetic_fitness(SPACE, arch, TARGET)


def target_evaluator(interrupt_at: int = 0) -> Evaluator:
    """A KD-like evaluator of the target task; the n-th evaluation raises KeyboardInterrupt when `interrupt_at`."""
    return synthetic_evaluator(target_loss, "kd_loss", interrupt_at=interrupt_at)


def source_history(path: Path, records: dict[str, list[EvalRecord]]) -> HistoryStore:
    store = HistoryStore(path)
    store.add_records([r for recs in records.values() for r in recs])
    return store


@pytest.mark.slow
def test_resume_of_a_warm_search_equals_an_uninterrupted_one(predictors: dict[str, Any], tmp_path: Path) -> None:
    options = {**SEARCH, "warm_start": str(predictors["good"])}

    def search(run_dir: Path, store: HistoryStore, interrupt_at: int = 0) -> Any:
        return run_search(
            target_evaluator(interrupt_at),
            SPACE,
            CostModel(SPACE),
            BUDGET,
            "warm_evolution",
            options,
            run_dir,
            history=store,
            task_id="target",
            seed=7,
        )

    ref_store = source_history(tmp_path / "ref.db", predictors["records"])
    search(tmp_path / "ref", ref_store)
    ref_state = json.loads((tmp_path / "ref" / STATE_FILE).read_text())
    ref_rows = ref_store.records(task_id="target")

    store = source_history(tmp_path / "run.db", predictors["records"])
    anchors = sum(e["origin"] == "anchor" for e in ref_state["evaluations"])
    with pytest.raises(KeyboardInterrupt):  # in the second offspring round
        search(tmp_path / "run", store, interrupt_at=anchors + 2 * SEARCH["population_size"] + 5)
    partial = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert partial["strategy"]["generation"] == 3 and [r["status"] for r in store.runs()][-1] == "interrupted"
    search(tmp_path / "run", store)
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    rows = store.records(task_id="target")
    assert state["evaluations"] == ref_state["evaluations"] and state["extra"] == ref_state["extra"]
    key = [(r.arch, r.fitness, r.generation, r.origin) for r in rows]
    assert key == [(r.arch, r.fitness, r.generation, r.origin) for r in ref_rows] and len(set(key)) == len(key)
    assert state["forward_evaluations"] == ref_state["forward_evaluations"] - 4  # 4 reused from the history
    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert report["best"] == json.loads((tmp_path / "ref" / RESULT_FILE).read_text())["best"]

    # A snapshot taken between ask and tell restores the outstanding proposals and their predictions.
    cm, budget = feasibility(SPACE)
    a = warm(SPACE, 3, str(predictors["good"]), [r for recs in predictors["records"].values() for r in recs])
    for _ in range(2):
        archs = a.ask()
        a.tell(archs, [synthetic_fitness(SPACE, x, TARGET) for x in archs])
    asked = a.ask()
    b = WarmStartEvolution(
        SPACE,
        lambda x: cm.feasible(x, budget),
        3,
        sampler=lambda r: cm.sample_feasible(r, budget, 200),
        config=a.config,
        task_meta=a.task_meta,
    )
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in (a, b):
        s.tell(asked, [synthetic_fitness(SPACE, x, TARGET) for x in asked])
    assert b.transfer_log == a.transfer_log and b.ask() == a.ask()
    with pytest.raises(ValueError, match="predictor sha256"):
        warm(SPACE, 3, str(predictors["shuffled"])).load_state_dict(a.state_dict())


@pytest.mark.slow
def test_warm_search_on_a_tiny_supernet_end_to_end(tmp_path: Path) -> None:
    ev = trained_tiny_evaluator(30)
    space = ev.sn.space
    records = family(space, 60)
    predictor = train_predictor(records, space, tmp_path / "tiny.safetensors")
    store = source_history(tmp_path / "history.db", records)
    cm = CostModel(space, seq_len=24)
    budget = {"non_embedding_params": "50%", "seq_len": 24}
    with Tracker(tmp_path / "run", use_wandb=False) as tracker:
        result = run_search(
            ev,
            space,
            cm,
            budget,
            "warm_evolution",
            {
                "population_size": 8,
                "generations": 3,
                "parents": 3,
                "warm_start": str(predictor),
                "pool_size": 300,
                "candidate_factor": 5,
            },
            tmp_path / "run",
            history=store,
            task_id="tiny-kd",
            seed=0,
            tracker=tracker,
        )
    rows = store.records(task_id="tiny-kd")
    absolute = cm.check_feasible(Budget(**budget))
    anchors = [a for a in anchor_archs(space) if cm.feasible(a, absolute)]
    assert len(rows) == result.num_evaluations == len(anchors) + 3 * 8 == ev.num_evaluations
    assert {r.arch for r in rows if r.generation == 0} == set(anchors) and len({r.arch for r in rows}) == len(rows)
    origins = {r.origin for r in rows}
    assert {"anchor", "predicted", "evolved", "seed"} <= origins <= {"anchor", "predicted", "evolved", "seed", "random"}
    # every row records the task as the search saw it: objective, metric direction and sequence length
    target = {"objective": "kd", "higher_is_better": False, "seq_len": 24}
    assert all(r.task_meta == target and cm.feasible(r.arch, absolute) for r in rows)
    assert result.best_fitness == max(r.fitness for r in rows)

    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    transfer = report["transfer"]
    assert transfer[0]["event"] == "warm_start" and transfer[0]["predictor"] == str(predictor)
    guard = [e for e in transfer if e["event"] == "guard"]
    assert [e["generation"] for e in guard] == [1, 2, 3] and all(e["tau_params_proxy"] is not None for e in guard)
    assert report["options"]["task_meta"] == target
    metrics = read_metrics(tmp_path / "run")
    logged = [m for m in metrics if "transfer/tau_predictor" in m]
    assert [m["step"] for m in logged] == [1, 2, 3] and all("transfer/decision" in m for m in logged)
    assert next(m["transfer/warm_start"] for m in metrics if "transfer/warm_start" in m).startswith("warm start from")
