"""Single-stage search: `training.sampling: relaxed` trains architecture logits alongside the weights.

The tiny random BERT teacher of `test_train.py`, KD on a slice of the builtin corpus, a params budget
of 40% of the teacher. Checked: the subnets of every step are the sandwich's ends plus draws of the
logits; the logits move into the budget; an interrupted run resumes to the same weights and logits;
the trained supernet carries the logits and the differentiable search starts from them; bad
settings are one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_teacher_dir, torchrun_two

from metanas.config import Recipe
from metanas.cost import Budget, CostModel
from metanas.evaluate import Evaluator
from metanas.search import DifferentiableSearch
from metanas.search.relaxed import ArchLogits, CostTerms
from metanas.tracking import read_metrics
from metanas.training import SUPERNET_FILE, load_trained_supernet, train_supernet
from metanas.training.checkpoint import TrainingInterrupted
from metanas.training.trainer import SupernetTrainer, SupernetWithObjective

SEQ = 32
BUDGET = {"params": "40%", "seq_len": SEQ}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return tiny_teacher_dir(tmp_path_factory.mktemp("teacher"))


def relaxed_recipe(teacher: Path, **training) -> Recipe:
    return Recipe.from_dict(
        {
            "teacher": {"path": str(teacher)},
            "data": {"max_length": SEQ, "max_documents": 300},
            "objective": {"name": "kd"},
            "training": {
                "steps": 10,
                "batch_size": 8,
                "lr": 0.001,
                "eval_batches": 2,
                "log_every": 2,
                "eval_every": 0,
                "sampling": "relaxed",
                "relaxation": {"arch_lr": 0.2},
                "seed": 3,
                **training,
            },
            "budget": BUDGET,
            "logging": {"wandb": False},
        }
    )


def expected_params(space, state) -> float:
    logits = ArchLogits(space)
    logits.load_state_dict(state)
    terms = CostTerms(space, space.params, "params")
    with torch.no_grad():
        return float(terms.expected(logits.probabilities()))


@pytest.fixture(scope="module")
def relaxed_run(teacher, tmp_path_factory):
    """A 10-step relaxed run, with every subnet the loop trained recorded."""
    seen = []
    original = SupernetWithObjective.forward

    def spy(self, batch, arch, context, **kwargs):
        seen.append(arch)
        return original(self, batch, arch, context, **kwargs)

    SupernetWithObjective.forward = spy
    try:
        result = train_supernet(relaxed_recipe(teacher), tmp_path_factory.mktemp("relaxed") / "run")
    finally:
        SupernetWithObjective.forward = original
    return result, seen


def test_relaxed_training_draws_its_subnets_from_logits_driven_into_the_budget(relaxed_run):
    result, seen = relaxed_run
    space = result.supernet.space
    assert len(seen) == 10 * 4
    for step in range(10):
        largest, smallest, *drawn = seen[4 * step : 4 * step + 4]
        assert largest == space.largest() and smallest == space.smallest() and len(drawn) == 2
    summary = json.loads(result.summary_path.read_text())["relaxation"]
    assert summary["relaxation_steps"] == 10 and summary["skipped_steps"] == 0
    limit = 0.4 * space.params(space.largest())
    assert summary["expected_costs"]["params"]["limit"] == pytest.approx(limit)
    uniform = expected_params(space, ArchLogits(space).state_dict())
    trained = load_trained_supernet(result.run_dir).supernet.relaxation
    assert uniform > limit  # the uniform distribution starts over the budget ...
    assert summary["expected_costs"]["params"]["expected"] == pytest.approx(expected_params(space, trained["state"]))
    assert summary["expected_costs"]["params"]["expected"] < 0.8 * uniform  # ... and the penalty pulls it in
    logged = set().union(*(r.keys() for r in read_metrics(result.run_dir) if "step" in r))
    assert {"loss/largest", "loss/smallest", "loss/relaxed", "loss/relaxation"} <= logged
    assert trained["space_signature"] == space.signature()


def test_relaxed_training_resumes_to_the_same_weights_and_logits(teacher, relaxed_run, tmp_path, monkeypatch):
    result, _ = relaxed_run
    original = SupernetTrainer._stop_requested
    monkeypatch.setattr(SupernetTrainer, "_stop_requested", lambda self, i: self.state.step == 4 or original(self, i))
    with pytest.raises(TrainingInterrupted):
        train_supernet(relaxed_recipe(teacher), tmp_path / "run")
    monkeypatch.setattr(SupernetTrainer, "_stop_requested", original)
    resumed = train_supernet(relaxed_recipe(teacher), tmp_path / "run", resume=True)
    for k, v in result.supernet.state_dict().items():
        assert torch.equal(v, resumed.supernet.state_dict()[k]), k
    whole = torch.load(result.run_dir / SUPERNET_FILE, weights_only=True)["meta_json"]
    again = torch.load(tmp_path / "run" / SUPERNET_FILE, weights_only=True)["meta_json"]
    assert json.loads(whole)["relaxation"] == json.loads(again)["relaxation"]


def test_differentiable_search_starts_from_the_trained_logits(relaxed_run, teacher, tmp_path):
    trained = load_trained_supernet(relaxed_run[0].run_dir)
    sn, objective = trained.supernet, trained.objective()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 300, (4, SEQ), generator=g), "attention_mask": torch.ones(4, SEQ).long()}
    ev = Evaluator(sn, objective, [batch])
    cm = CostModel(sn.space, seq_len=SEQ)
    budget = cm.check_feasible(Budget(**BUDGET))

    def strategy(**options) -> DifferentiableSearch:
        s = DifferentiableSearch(sn.space, lambda a: cm.feasible(a, budget), 0, rounds=1, steps_per_round=2, **options)
        s.attach_evaluator(ev, cm, budget)
        return s

    auto = strategy()
    assert auto.started_from == "trained" and "from the logits trained with it" in auto.describe().message
    assert auto.relaxation.arch.state_dict()["logits"] == sn.relaxation["state"]["logits"]
    uniform = strategy(init="uniform")
    assert uniform.started_from == "uniform"
    assert not any(torch.tensor(t).any() for t in uniform.relaxation.arch.state_dict()["logits"].values())
    assert auto.ask() and auto.extra_state()["differentiable"]["started_from"] == "trained"

    sn.relaxation = None  # a supernet trained with the sandwich rule
    assert strategy().started_from == "uniform"
    with pytest.raises(ValueError, match="init='trained' but the supernet carries no trained architecture logits"):
        strategy(init="trained")
    with pytest.raises(ValueError, match="init must be one of auto, trained, uniform"):
        strategy(init="best")


@pytest.mark.parametrize(
    ("training", "budget", "message"),
    [
        ({"relaxation": {"lr": 0.1}}, BUDGET, "training.relaxation: unknown option.s. lr; valid options: arch_lr"),
        ({"relaxation": {"tau_end": 5.0}}, BUDGET, "training.relaxation: tau_end must be <= tau_start"),
        ({"sampling": "sandwich"}, BUDGET, "training.relaxation is set but training.sampling is not 'relaxed'"),
        ({}, {"seq_len": SEQ}, "the budget limits nothing"),
        ({}, {"latency_ms": 5.0}, "relaxed: CostModel: a latency_ms budget needs a latency source .* fits the latency"),
        ({"relaxation": {"cost": "flops"}}, BUDGET, "cost='flops' but the budget does not limit flops"),
    ],
)
def test_bad_relaxed_settings_are_one_clear_error(teacher, tmp_path, training, budget, message):
    recipe = relaxed_recipe(teacher, **training)
    recipe = Recipe.from_dict({**recipe.to_dict(), "budget": budget})
    with pytest.raises(ValueError, match=message):
        train_supernet(recipe, tmp_path / "bad")
    assert not (tmp_path / "bad" / SUPERNET_FILE).exists()


DDP_DRIVER = """
import json, sys, torch
import torch.distributed as dist
from metanas.config import load_recipe
from metanas.training.trainer import SupernetTrainer
trainer = SupernetTrainer(load_recipe(sys.argv[1]), sys.argv[2])
result = trainer.run()
out = {"state": result.supernet.state_dict(), "logits": json.dumps(trainer.relaxed.relaxation.state_dict())}
torch.save(out, f"{sys.argv[2]}/rank{dist.get_rank()}.pt")
"""


@pytest.mark.slow
def test_two_process_relaxed_training_keeps_weights_and_logits_identical(teacher, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER, encoding="utf-8")
    recipe = tmp_path / "relaxed.yaml"
    recipe.write_text(relaxed_recipe(teacher, steps=6, checkpoint_every=3).to_yaml(), encoding="utf-8")
    run_dir = tmp_path / "ddp"
    torchrun_two(driver, str(recipe), str(run_dir), tmp_path=tmp_path)
    ranks = [torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["logits"] == ranks[1]["logits"]
    assert json.loads(ranks[0]["logits"])["step"] == 6
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    saved = json.loads(torch.load(run_dir / SUPERNET_FILE, weights_only=True)["meta_json"])["relaxation"]
    assert saved["state"] == json.loads(ranks[0]["logits"])


def test_compress_checks_relaxed_settings_before_any_stage(teacher):
    """The preflight of `compress` (and of its dry run) refuses bad single-stage settings before the latency stage."""
    from metanas.pipeline.checks import preflight

    recipe = Recipe.from_dict({**relaxed_recipe(teacher).to_dict(), "training": {"relaxation": {"arch_lr": 0.1}}})
    with pytest.raises(ValueError, match="training.relaxation is set but training.sampling is not 'relaxed'"):
        preflight(recipe, None, None)
    assert preflight(relaxed_recipe(teacher), None, None) == []
