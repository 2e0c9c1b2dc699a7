"""`warm_start: auto` on the user's own history, and the warm start's baseline scorers (offline, seeded).

Histories are built in-process from a synthetic task family (fitness a smooth function
of the arch whose per-layer weighting depends on a task latent); meta-training runs
with a tiny epoch grid so every test takes seconds.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from synthetic import drive, minilm_space, synthetic_evaluator

import metanas.meta.autotrain as autotrain
from metanas.cost import Budget, CostModel
from metanas.meta.anchors import anchor_archs
from metanas.meta.autotrain import (
    CACHE_ENV_VAR,
    MIN_TASK_EVALUATIONS,
    MIN_TASKS,
    RUN_PREDICTOR_FILE,
    HistoryTraining,
    resolve_auto,
    usable_tasks,
)
from metanas.meta.choice import PREDICTOR_ENV_VAR, resolve_warm_start
from metanas.meta.history import EvalRecord, HistoryStore
from metanas.search import WarmStartEvolution
from metanas.search.configs import WarmStartConfig
from metanas.search.runner import RESULT_FILE, STATE_FILE, run_search
from metanas.space import ArchConfig, SearchSpace

SPACE = minilm_space()
BUDGET = {"non_embedding_params": "40%"}
LATENTS = {"src0": (0.8, -0.6), "src1": (0.6, -0.9), "src2": (-0.7, 0.8), "src3": (0.9, -0.3)}
TARGET = (0.7, -0.5)
SMALL = {
    "population_size": 8,
    "generations": 4,
    "parents": 3,
    "pool_size": 150,
    "candidate_factor": 4,
    "adapt_steps": 5,
    "target_epochs": 20,
}
FAST = HistoryTraining(epochs_grid=(30,), weight_decay_grid=(1e-4,))


def fitness_of(arch: ArchConfig, z: tuple[float, float], space: SearchSpace = SPACE) -> float:
    """Bigger is better with diminishing returns; z moves head and FFN value between lower and upper layers."""
    gain = 3.0 * math.log(arch.hidden)
    for i, (h, f) in enumerate(zip(arch.heads, arch.ffn)):
        t = i / max(1, space.max_depth - 1)
        gain += (1.0 + z[0] * (0.5 - t)) * math.log(h) + (0.8 + z[1] * (t - 0.5)) * math.log(f / min(space.ffn_choices))
    return gain - 60.0


def history(tasks: list[str], n_random: int = 12, shuffle: bool = False) -> list[EvalRecord]:
    """Anchor + random records of `tasks` (fitness shuffled within each task when `shuffle`), as a search writes."""
    cm = CostModel(SPACE)
    anchors = anchor_archs(SPACE)
    out = []
    for t, task in enumerate(tasks):
        rng = random.Random(t)
        archs = anchors + [SPACE.sample(rng) for _ in range(n_random)]
        fitness = [fitness_of(a, LATENTS[task]) for a in archs]
        if shuffle:
            random.Random(100 + t).shuffle(fitness)
        out += [
            EvalRecord(
                run_id=f"run-{task}",
                task_id=task,
                space_signature=SPACE.signature(),
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


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private predictor cache, fast meta-training, and a count of the trainings."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(autotrain, "DEFAULT_TRAINING", FAST)
    calls = {"dir": tmp_path / "cache", "trainings": 0}
    real = autotrain.meta_train

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["trainings"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(autotrain, "meta_train", counting)
    return calls


def warm(seed: int, sources: list[EvalRecord] | None = None, **kw: Any) -> WarmStartEvolution:
    """A warm start on the target task; `sources` are attached as the runner would."""
    cm = CostModel(SPACE, seq_len=128)
    budget = cm.check_feasible(Budget(**BUDGET))
    strategy = WarmStartEvolution(
        SPACE,
        lambda a: cm.feasible(a, budget),
        seed,
        sampler=lambda r: cm.sample_feasible(r, budget, 200),
        task_meta={"objective": "kd", "higher_is_better": True, "seq_len": 128},
        **{**SMALL, **kw},
    )
    if sources is not None:
        strategy.attach(strategy.task_meta, sources)
    return strategy


def target_fitness(arch: ArchConfig) -> float:
    return fitness_of(arch, TARGET)


def drive_with_origins(strategy: WarmStartEvolution) -> list[tuple[ArchConfig, str]]:
    """Like `synthetic.drive` on the target, keeping how each proposal was made."""
    asked = []
    while not strategy.done and (archs := strategy.ask()):
        asked += [(x, strategy.origin(x)) for x in archs]
        strategy.tell(archs, [target_fitness(x) for x in archs])
    return asked


# --------------------------------------------------------------------------- the choice of `auto`


def test_auto_trains_on_enough_history_caches_it_and_retrains_on_a_new_task(cache: dict[str, Any]) -> None:
    shipped = resolve_warm_start("auto")
    assert shipped.active
    few = resolve_auto(SPACE, history(["src0", "src1"]), shipped)
    assert few.sha256 == shipped.sha256 and cache["trainings"] == 0
    assert few.message.startswith("warm start auto: shipped predictor (metanas/checkpoints/meta_predictor")
    assert f"your history has 2 compatible tasks, needs {MIN_TASKS}" in few.message

    # A task with too few evaluations (anchors included) is not compatible.
    short = [r for r in history(["src2"], n_random=0)][: MIN_TASK_EVALUATIONS - 1]
    assert usable_tasks(short, SPACE, anchor_archs(SPACE)) == {}
    assert "has 2 compatible tasks" in resolve_auto(SPACE, history(["src0", "src1"]) + short, shipped).message

    sources = history(["src0", "src1", "src2"])
    first = resolve_auto(SPACE, sources, shipped)
    assert cache["trainings"] == 1 and first.sha256 != shipped.sha256
    assert first.path.parent == cache["dir"] and first.path.is_file()
    assert first.message.startswith(f"warm start auto: predictor meta-trained on your history (3 tasks, {len(sources)}")
    assert first.predictor.encoding == shipped.predictor.encoding  # the same anchors as every search of the space
    assert str(cache["dir"]) not in first.message  # the message names no absolute path of this machine

    again = resolve_auto(SPACE, list(sources), shipped)
    assert cache["trainings"] == 1 and again.sha256 == first.sha256 and again.message == first.message

    more = resolve_auto(SPACE, sources + history(["src3"]), shipped)
    assert cache["trainings"] == 2 and more.sha256 != first.sha256 and "(4 tasks" in more.message

    # No shipped predictor: a good enough history still warm-starts; too little searches cold.
    cold = resolve_warm_start("off")
    assert resolve_auto(SPACE, sources, cold).sha256 == first.sha256 and cache["trainings"] == 2
    assert not resolve_auto(SPACE, sources[:40], cold).active


def test_the_strategy_picks_its_predictor_in_attach(cache: dict[str, Any], monkeypatch) -> None:
    before = warm(0)
    assert before.wants_sources and before.base is not None and before.mode == "meta"
    shipped_sha = before.choice.sha256
    after = warm(0, history(["src0", "src1", "src2"]))
    assert after.choice.sha256 != shipped_sha and after.transfer_log[0]["mode"] == "meta"
    assert after.describe().message.startswith("warm start auto: predictor meta-trained on your history")
    assert {s.task_id for s in after.sources} == {"src0", "src1", "src2"}
    assert not warm(0, warm_start="off").wants_sources

    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(cache["dir"] / "missing.safetensors"))
    orphan = warm(0, history(["src0"]))
    assert orphan.mode == "evolution" and "no default predictor" in orphan.describe().message
    assert "your history has 1 compatible tasks" in orphan.describe().message


# --------------------------------------------------------------------------- through the runner, resumed


def test_a_search_on_a_history_trained_predictor_resumes_exactly(cache: dict[str, Any], tmp_path: Path) -> None:
    options = {**SMALL, "warm_start": "auto"}

    def search(run_dir: Path, store: HistoryStore, interrupt_at: int = 0) -> Any:
        return run_search(
            synthetic_evaluator(lambda a: -target_fitness(a), "kd_loss", interrupt_at=interrupt_at),
            SPACE,
            CostModel(SPACE),
            BUDGET,
            "warm_evolution",
            options,
            run_dir,
            history=store,
            task_id="target",
            seed=5,
        )

    def store(name: str) -> HistoryStore:
        s = HistoryStore(tmp_path / f"{name}.db")
        s.add_records(history(["src0", "src1", "src2"]))
        return s

    ref = search(tmp_path / "ref", store("ref"))
    assert cache["trainings"] == 1
    assert ref.warm_start.startswith("warm start auto: predictor meta-trained on your history (3 tasks")
    ref_state = json.loads((tmp_path / "ref" / STATE_FILE).read_text())
    assert ref_state["extra"]["transfer"][0]["message"] == ref.warm_start

    run = store("run")
    anchors = sum(e["origin"] == "anchor" for e in ref_state["evaluations"])
    with pytest.raises(KeyboardInterrupt):  # in the second predictor-ranked round
        search(tmp_path / "run", run, interrupt_at=anchors + SMALL["population_size"] + 3)
    assert (tmp_path / "run" / RUN_PREDICTOR_FILE).is_file() and cache["trainings"] == 1  # the cached file reused
    for f in cache["dir"].iterdir():  # a cleared cache: the resume uses the run directory's copy, no retraining
        f.unlink()
    search(tmp_path / "run", run)
    assert cache["trainings"] == 1
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["evaluations"] == ref_state["evaluations"]
    ref_log, log = ref_state["extra"]["transfer"], state["extra"]["transfer"]
    assert log[1:] == ref_log[1:] and log[0]["message"] == ref_log[0]["message"]
    assert log[0]["predictor"] == str(tmp_path / "run" / RUN_PREDICTOR_FILE)  # each run directory keeps its copy
    assert state["strategy"]["warm"]["predictor_sha256"] == ref_state["strategy"]["warm"]["predictor_sha256"]
    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert report["best"] == json.loads((tmp_path / "ref" / RESULT_FILE).read_text())["best"]


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("scorer", ["proxy", "target"])
def test_baseline_scorers_are_feasible_deterministic_and_resume(
    scorer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(tmp_path / "missing.safetensors"))  # no predictor file needed
    cm = CostModel(SPACE, seq_len=128)
    budget = cm.check_feasible(Budget(**BUDGET))
    a = warm(1, history(["src0", "src1", "src2"]), scorer=scorer)
    assert not a.wants_sources and a.base is None and a.mode == scorer and a.sources == []
    assert a.describe().message.startswith(f"warm start scorer={scorer}")
    proposals = drive_with_origins(a)
    asked = [x for x, _ in proposals]
    assert all(cm.feasible(x, budget) for x in asked) and len(set(asked)) == len(asked)
    assert drive_with_origins(warm(1, scorer=scorer)) == proposals
    origins = {o for _, o in proposals}
    assert {"anchor", "predicted", "evolved"} <= origins and "seed" not in origins
    anchors = [x for x in anchor_archs(SPACE) if cm.feasible(x, budget)]
    assert asked[: len(anchors)] == anchors and a.planned_evaluations() == len(anchor_archs(SPACE)) + 4 * 8
    guard = [e for e in a.transfer_log if e["event"] == "guard"]
    assert guard and all(e["tau_predictor"] is None for e in guard)
    if scorer == "proxy":
        assert all(e["decision"] == "keep" and e["tau_target_only"] is None for e in guard)
        first = [x for x, o in proposals if o == "predicted"][:3]  # the proxy's top picks are the largest
        assert min(SPACE.params(x) for x in first) >= sorted(SPACE.params(x) for x in asked)[len(asked) // 2]
    else:
        assert all(e["tau_target_only"] is not None for e in guard)

    # A snapshot between ask and tell resumes to the same proposals.
    b = warm(2, scorer=scorer)
    for _ in range(2):
        archs = b.ask()
        b.tell(archs, [target_fitness(x) for x in archs])
    pending = b.ask()
    c = warm(2, scorer=scorer)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    for s in (b, c):
        s.tell(pending, [target_fitness(x) for x in pending])
    assert c.transfer_log == b.transfer_log and c.ask() == b.ask()


def test_scorer_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"scorer must be one of meta, proxy, target, got 'bogus'"):
        WarmStartConfig(scorer="bogus")
    with pytest.raises(ValueError, match=r"scorer='proxy' ranks without a predictor file.*got 'off'"):
        WarmStartConfig(scorer="proxy", warm_start="off")


# --------------------------------------------------------------------------- the guard


def test_the_guard_falls_back_on_a_predictor_trained_on_shuffled_history(cache: dict[str, Any], monkeypatch) -> None:
    """Fitness shuffled within each source task: the predictor learned noise, so it ranks the target's archs
    below the params proxy two rounds in a row and the guard leaves it."""
    monkeypatch.setattr(autotrain, "DEFAULT_TRAINING", HistoryTraining(epochs_grid=(100,), weight_decay_grid=(1e-4,)))
    shuffled = history(["src0", "src1", "src2", "src3"], n_random=60, shuffle=True)
    strategy = warm(3, shuffled, adapt_steps=0, generations=5)  # no adaptation: the transferred ranking alone
    assert strategy.describe().message.startswith("warm start auto: predictor meta-trained on your history (4 tasks")
    drive(strategy, target_fitness)
    guard = [e for e in strategy.transfer_log if e["event"] == "guard"]
    fallback = next(e for e in guard if e["decision"].startswith("fallback:"))
    assert fallback["mode"] == "meta" and fallback["tau_predictor"] < fallback["tau_params_proxy"]
    assert strategy.mode in ("target", "evolution") and strategy.mode == guard[-1]["next_mode"]
