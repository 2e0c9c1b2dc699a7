import json
import random
import time

import numpy as np
import pytest
import torch
from helpers import tiny_tokenizer
from tiny_models import tiny_teacher
from transformers import BertConfig

import metanas
import metanas.cost.latency as latency
from metanas import ArchConfig, SearchSpace
from metanas.cost import FEATURE_NAMES, Budget, CostModel, LatencyPredictor, latency_features
from metanas.cost.latency import (
    LatencyStats,
    build_latency_predictor,
    device_fingerprint,
    measure_arch_latency,
    measure_latency,
)


def minilm_space(**overrides) -> SearchSpace:
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return SearchSpace.from_teacher_config(cfg, **overrides)


def fake_latency(arch: ArchConfig) -> float:
    """A latency that grows with every dimension, as a real one does."""
    return 0.5 + 0.3 * arch.depth + sum(arch.heads) * arch.hidden / 2e4 + sum(arch.ffn) * arch.hidden / 1e5


# ----------------------------------------------------------------------------- budgets


def test_budget_unknown_key_suggests_the_nearest():
    with pytest.raises(ValueError, match=r"unknown key 'latency'; did you mean 'latency_ms'\?.*allowed: params"):
        Budget.from_dict({"latency": 10})
    with pytest.raises(ValueError, match="did you mean 'params'"):
        Budget.from_dict({"param": 10})
    with pytest.raises(ValueError, match=r"unknown key 'zzz' \(allowed"):
        Budget.from_dict({"zzz": 1})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"params": -5}, "budget params: must be a positive limit, got -5"),
        ({"flops": 0}, "budget flops: must be a positive limit, got 0"),
        ({"latency_ms": "-50%"}, "budget latency_ms: must be a positive percentage"),
        ({"params": "lots"}, "budget params: 'lots' is not a number"),
        ({"params": "x%"}, "budget params: 'x%' is not a valid percentage"),
        ({"params": [1]}, "budget params: expected a number or a percentage.*got list"),
        ({"params": True}, "budget params: expected a number"),
        ({"seq_len": 0}, "budget seq_len: must be a positive integer"),
    ],
)
def test_budget_bad_values(data, message):
    with pytest.raises(ValueError, match=message):
        Budget.from_dict(data)


def test_budget_from_dict_and_relative_resolution():
    space = minilm_space()
    teacher = space.largest()
    b = Budget.from_dict({"params": "50%", "flops": 1e7, "latency_ms": " 25% ", "seq_len": 64})
    assert b.limits() == {"params": "50%", "flops": 1e7, "latency_ms": "25%"} and b.is_relative
    cm = CostModel(space, seq_len=64, latency=fake_latency)
    absolute = b.resolve(cm)
    assert not absolute.is_relative
    assert absolute.params == pytest.approx(0.5 * space.params(teacher))
    assert absolute.latency_ms == pytest.approx(0.25 * fake_latency(teacher))
    assert absolute.flops == 1e7 and absolute.seq_len == 64
    with pytest.raises(ValueError, match="relative latency_ms budget needs a latency source"):
        Budget(latency_ms="50%").resolve(CostModel(space))


def test_costs_and_feasibility():
    space = minilm_space()
    cm = CostModel(space, seq_len=128, latency=fake_latency)
    small, big = space.smallest(), space.largest()
    c = cm.costs(small)
    assert c == {
        "params": space.params(small),
        "non_embedding_params": space.params(small, embeddings=False),
        "flops": space.flops(small, 128),
        "latency_ms": fake_latency(small),
    }
    assert set(CostModel(space).costs(small)) == {"params", "non_embedding_params", "flops"}
    half = Budget(non_embedding_params="50%")
    assert cm.feasible(small, half) and not cm.feasible(big, half)
    assert cm.feasible(big, Budget())
    with pytest.raises(ValueError, match="budget is for batch 1 x seq 32 but the CostModel counts batch 1 x seq 128"):
        cm.feasible(small, Budget(params=1e9, seq_len=32))
    with pytest.raises(ValueError, match="latency_ms budget needs a latency source"):
        CostModel(space).feasible(small, Budget(latency_ms=5.0))


def test_infeasible_budget_names_the_smallest_cost():
    space = minilm_space()
    cm = CostModel(space, latency=fake_latency)
    need = space.params(space.smallest())
    assert need == 6_491_712
    with pytest.raises(
        ValueError, match=r"infeasible budget: params <= 1,000 but the smallest arch .* needs 6,491,712"
    ):
        cm.check_feasible(Budget(params=1000))
    with pytest.raises(ValueError, match=r"infeasible budget: latency_ms <= 0\.1 but .* needs 2\.651 "):
        cm.check_feasible(Budget(latency_ms=0.1))
    with pytest.raises(ValueError, match="infeasible budget: flops"):
        cm.sample_feasible(0, Budget(flops=10))
    assert cm.check_feasible(Budget(params="30%")).params == pytest.approx(0.3 * space.params(space.largest()))


def test_sample_feasible_under_a_tight_budget_terminates():
    space = minilm_space()
    calls = []

    def counted(arch):
        calls.append(arch)
        return fake_latency(arch)

    cm = CostModel(space, latency=counted)
    small = space.smallest()
    # Only archs a few choices above the smallest fit: rejection sampling essentially never succeeds.
    budget = Budget(flops=1.3 * space.flops(small), latency_ms=1.3 * fake_latency(small))
    rng = random.Random(0)
    archs = [cm.sample_feasible(rng, budget, max_tries=50) for _ in range(30)]
    assert len(calls) == 31  # latency, the costly check, only runs for archs within the FLOPs limit
    assert all(cm.feasible(a, budget) for a in archs)
    assert len(set(archs)) == 9  # every feasible arch (all at depth 2) turns up: shrinking keeps variety
    again = [cm.sample_feasible(random.Random(0), budget, max_tries=50) for _ in range(1)]
    assert again[0] == archs[0]
    loose = Budget(params="80%")
    archs = [cm.sample_feasible(random.Random(i), loose) for i in range(20)]
    assert all(cm.feasible(a, loose) for a in archs) and len(set(archs)) == 20


# ----------------------------------------------------------------------------- measurement


def test_latency_stats_mean_of_the_middle_80_percent():
    timings = [5.0] * 16 + [100.0, 200.0, 0.1, 0.2]
    s = LatencyStats.from_timings(timings)
    assert s.mean_ms == 5.0  # the two fastest and two slowest of 20 are dropped
    assert s.median_ms == 5.0 and s.p90_ms == 5.0
    s = LatencyStats.from_timings([float(i) for i in range(1, 21)])
    assert s.mean_ms == pytest.approx(10.5) and s.p90_ms == 18.0 and len(s.timings_ms) == 20
    s = LatencyStats.from_timings([3.0, 1.0, 2.0])  # under 10 runs nothing is dropped
    assert s.mean_ms == 2.0 and s.p90_ms == 3.0
    with pytest.raises(ValueError, match="no timings"):
        LatencyStats.from_timings([])


def test_measure_latency_counts_and_times():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    s = measure_latency(fn, warmup=3, runs=7)
    assert len(calls) == 10 and len(s.timings_ms) == 7
    assert 2.0 <= s.median_ms < 200.0 and min(s.timings_ms) >= 2.0


def test_cpu_clock_ignores_time_the_thread_does_not_run():
    wall = measure_latency(lambda: time.sleep(0.005), warmup=0, runs=5)
    cpu = measure_latency(lambda: time.sleep(0.005), warmup=0, runs=5, clock="cpu")
    assert wall.median_ms >= 5.0 and cpu.median_ms < 1.0
    with pytest.raises(ValueError, match="clock must be one of"):
        measure_latency(lambda: None, clock="gpu")
    with pytest.raises(ValueError, match="cannot time asynchronous device work"):
        measure_latency(lambda: None, sync=lambda: None, clock="cpu")


def test_measure_arch_latency_on_a_tiny_supernet():
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    before = torch.get_num_threads()  # 1 (conftest.py); start from 2 so that restoring the count shows
    torch.set_num_threads(2)
    try:
        s = measure_arch_latency(sn, sn.space.largest(), batch_size=2, seq_len=16, threads=1, warmup=2, runs=5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(s.timings_ms) == 5 and all(0 < t < 5000 for t in s.timings_ms)
    assert 0 < s.mean_ms <= s.p90_ms
    cpu = measure_arch_latency(
        sn, sn.space.largest(), batch_size=2, seq_len=16, threads=1, warmup=2, runs=5, clock="cpu"
    )
    assert 0 < cpu.mean_ms < 5000
    with pytest.raises(ValueError, match="clock='cpu' measures latency only with threads=1"):
        measure_arch_latency(sn, sn.space.largest(), threads=2, clock="cpu")
    fp = device_fingerprint(1)
    assert "threads=1" in fp and f"torch={torch.__version__}" in fp and fp.endswith("device=cpu")
    assert device_fingerprint(1, clock="cpu") == fp + "|clock=cpu"


# ----------------------------------------------------------------------------- predictor


def test_features_follow_the_work():
    space = minilm_space()
    a = space.uniform(2, 192, 4, 384)
    f = dict(zip(FEATURE_NAMES, latency_features(space, a, batch_size=2, seq_len=64)))
    assert f["layers"] == 2 and f["bias"] == 1
    assert f["attn_proj"] == pytest.approx(128 * 192 * 2 * 128 / 1e6)  # tokens x hidden x (2 layers x 4 heads x 32)
    assert f["attn_scores"] == pytest.approx(2 * 64 * 64 * 256 / 1e6)
    assert f["ffn"] == pytest.approx(128 * 192 * 768 / 1e6) and f["embed_proj"] == 0


def test_predictor_recovers_an_exact_linear_latency():
    space = minilm_space()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(80)]
    true_w = np.array([0.4, 0.25, 0.02, 0.01, 0.015, 0.3, 0.5, 0.2, 0.0, 0.1])
    lat = [float(latency_features(space, a, 1, 128) @ true_w) for a in archs]
    pred = LatencyPredictor(space).fit(archs[:60], lat[:60])
    assert pred.mape(archs[60:], lat[60:]) < 1.0
    assert pred.predict(archs[70]) == pytest.approx(lat[70], rel=1e-6)
    with pytest.raises(ValueError, match="need >= 2 archs"):
        LatencyPredictor(space).fit(archs[:1], lat[:1])
    with pytest.raises(ValueError, match="call fit"):
        LatencyPredictor(space).predict(archs[0])


def test_predictor_save_load_and_mismatches(tmp_path):
    space = minilm_space()
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(30)]
    pred = LatencyPredictor(space, batch_size=1, seq_len=128, device="cpu=x|threads=2").fit(
        archs, [fake_latency(a) for a in archs]
    )
    path = pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(path, space)
    assert back.device == "cpu=x|threads=2" and back.seq_len == 128
    assert [back.predict(a) for a in archs] == [pred.predict(a) for a in archs]
    assert CostModel(space, latency=back).costs(archs[0])["latency_ms"] == pred.predict(archs[0])
    with pytest.raises(ValueError, match="predictor is for search space .* not "):
        LatencyPredictor.load(path, minilm_space(depth_choices=(4, 5, 6)))
    with pytest.raises(ValueError, match="batch 1 x seq 128, not batch 1 x seq 64"):
        CostModel(space, seq_len=64, latency=back)
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version 99; this metanas reads 1"):
        LatencyPredictor.load(path, space)
    del data["weights"]
    data["version"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lacks the field 'weights'"):
        LatencyPredictor.load(path, space)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a latency predictor file"):
        LatencyPredictor.load(path, space)


def test_build_measures_once_then_hits_the_cache(tmp_path, monkeypatch):
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    measured = []
    real = latency.measure_arch_latency

    def spy(sn_, arch, *args):
        measured.append(arch)
        return real(sn_, arch, *args)

    monkeypatch.setattr(latency, "measure_arch_latency", spy)
    kw = dict(batch_size=1, seq_len=16, threads=1, cache_dir=tmp_path, warmup=1, runs=3, holdout=0.3, progress=False)
    pred = build_latency_predictor(sn, None, 8, **kw)
    assert len(measured) == 8 and len(set(measured)) == 8
    assert measured[:2] == [sn.space.smallest(), sn.space.largest()]
    splits = [s for _, _, s in pred.measurements]
    assert splits.count("holdout") == 2 and pred.holdout_mape is not None and pred.holdout_mape >= 0
    assert pred.predict(sn.space.largest()) > 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("-b1-s16.json")

    again = build_latency_predictor(sn, None, 8, **kw)
    assert len(measured) == 8  # nothing measured again
    assert list(again.weights) == list(pred.weights)
    more = build_latency_predictor(sn, None, 10, **kw)  # a larger n tops the cache up
    assert len(measured) == 10 and len(more.measurements) == 10
    assert more.measurements[:8] == pred.measurements


def test_build_rounds_keep_each_archs_median_pass(monkeypatch):
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    calls = []

    def fake(sn_, arch, *args):
        calls.append(arch)
        factor = {1: 3.0, 2: 1.0, 3: 0.9}[(len(calls) - 1) // 6 + 1]  # a disturbed pass, then two quiet ones
        return LatencyStats.from_timings([sn_.space.flops(arch, 16) / 1e4 * factor])

    monkeypatch.setattr(latency, "measure_arch_latency", fake)
    pred = build_latency_predictor(sn, None, 6, 1, 16, cache_dir=None, rounds=3, holdout=0.0, progress=False)
    assert len(calls) == 18 and set(calls[:6]) == set(calls[6:12]) == set(calls[12:])
    assert [ms for _, ms, _ in pred.measurements] == [sn.space.flops(a, 16) / 1e4 for a, _, _ in pred.measurements]
    assert pred.holdout_mape is None


def test_saved_model_kinds_are_checked():
    from metanas.cost.isolated import SavedModel

    with pytest.raises(ValueError, match=r"SavedModel.kind must be one of \['teacher', 'hf', 'onnx'\], got 'torch'"):
        SavedModel("torch", "x")


@pytest.mark.slow
def test_saved_models_are_timed_in_a_fresh_process_round_by_round(tmp_path):
    """The report's timing: every model loaded from disk by a spawned process, one latency per round each."""
    from metanas.cost.isolated import SavedModel, measure_saved_models

    teacher = tiny_teacher("bert")
    teacher.save_pretrained(tmp_path / "teacher")
    sn = metanas.ElasticBert.from_teacher(teacher)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    student = metanas.export(sn, ArchConfig(1, 32, (2,), (32,)), tmp_path / "student", tokenizer=tokenizer)
    saved = {"teacher": SavedModel("teacher", str(tmp_path / "teacher")), "student": SavedModel("hf", str(student))}
    rounds = measure_saved_models(saved, 50, 1, 16, threads=1, rounds=3, warmup=1, runs=3)
    assert set(rounds) == {"teacher", "student"}
    assert all(len(ms) == 3 and all(0 < m < 1000 for m in ms) for ms in rounds.values())
