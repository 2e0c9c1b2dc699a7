"""Encodings, anchors, the meta-predictor and meta-training, on synthetic task families (no network, no models)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.stats import kstest, norm
from transformers import BertConfig

from metanas import ArchConfig, SearchSpace
from metanas.meta.anchors import anchor_archs
from metanas.meta.encoding import (
    arch_feature_matrix,
    arch_features,
    copula_normalize,
    feature_dim,
    normalize_anchor_scores,
    task_embedding,
    task_embedding_dim,
)
from metanas.meta.history import EvalRecord, HistoryStore
from metanas.meta.metatrain import build_training_set, kendall_tau_by_group, meta_train, task_embedding_from_records
from metanas.meta.predictor import MetaPredictor, TargetOnlyPredictor, params_proxy, ucb

MINI = SearchSpace.from_teacher_config(
    BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
)
BASE = SearchSpace.from_teacher_config(
    BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
)
SPACES = {MINI.signature(): MINI, BASE.signature(): BASE}
K = 16


@pytest.fixture(scope="module")
def anchors() -> dict[str, list[ArchConfig]]:
    return {sig: anchor_archs(space, K) for sig, space in SPACES.items()}


# ----- a synthetic task family ------------------------------------------------------
def latent_fitness(space: SearchSpace, archs: list[ArchConfig], z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shared smooth part plus a task-specific weighting (latent z) of lower-layer heads, upper-layer heads and FFN.

    Computed from the archs directly (not from the encoding under test). With z of
    mixed signs, parameter count explains only part of the ranking.
    """
    out = []
    for a in archs:
        heads = np.zeros(space.max_depth)
        heads[: a.depth] = np.asarray(a.heads) / max(space.head_choices)
        half = space.max_depth // 2
        ffn = np.mean(a.ffn) / max(space.ffn_choices)
        shared = 0.3 * a.hidden / max(space.hidden_choices) + 0.3 * np.sqrt(a.depth / space.max_depth)
        out.append(shared + z[0] * heads[:half].mean() + z[1] * heads[half:].mean() + z[2] * ffn)
    return np.asarray(out) + 0.05 * rng.standard_normal(len(archs))


def task_records(
    task: str, space: SearchSpace, z: np.ndarray, n: int, seed: int, anchor_list: list[ArchConfig]
) -> list[EvalRecord]:
    """The anchors (origin "anchor") and `n` random archs of one task, fitness = -kd_loss."""
    archs = list(anchor_list) + [space.sample(random.Random(seed * 7919 + i)) for i in range(n)]
    fitness = latent_fitness(space, archs, z, np.random.default_rng(seed))
    return [
        EvalRecord(
            run_id=f"run-{task}",
            task_id=task,
            space_signature=space.signature(),
            arch=a,
            fitness=float(f),
            metric_name="kd_loss",
            metric_value=-float(f),
            params=space.params(a),
            non_embedding_params=space.params(a, embeddings=False),
            flops=space.flops(a),
            origin="anchor" if i < len(anchor_list) else "random",
        )
        for i, (a, f) in enumerate(zip(archs, fitness))
    ]


def task_family(prefix: str, n_tasks: int, n: int, seed: int, anchors: dict) -> dict[str, list[EvalRecord]]:
    """Tasks alternating between the MiniLM-like and the BERT-base-like space, each with its own latent z."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in range(n_tasks):
        space = MINI if t % 2 == 0 else BASE
        out[f"{prefix}{t}"] = task_records(
            f"{prefix}{t}", space, rng.standard_normal(3), n, seed * 1000 + t, anchors[space.signature()]
        )
    return out


def mean_tau(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    return float(np.mean(list(kendall_tau_by_group(scores, y, groups).values())))


# ----- copula normalization -----------------------------------------------------------
def test_copula_ranks_ties_direction_and_marginals():
    got = copula_normalize([3.0, 1.0, 2.0])
    np.testing.assert_allclose(got, norm.ppf([2.5 / 3, 0.5 / 3, 1.5 / 3]))
    ties = copula_normalize([1.0, 1.0, 2.0, 0.0])  # the tied pair shares ranks 1 and 2 -> 1.5
    np.testing.assert_allclose(ties, norm.ppf([2.0 / 4, 2.0 / 4, 3.5 / 4, 0.5 / 4]))
    np.testing.assert_allclose(copula_normalize([3.0, 1.0, 2.0], higher_is_better=False), -got)
    assert copula_normalize([5.0]).tolist() == [0.0] and copula_normalize([]).size == 0
    np.testing.assert_allclose(copula_normalize([-np.inf, 0.0, 1.0]), norm.ppf([0.5 / 3, 1.5 / 3, 2.5 / 3]))
    with pytest.raises(ValueError, match="NaN"):
        copula_normalize([1.0, np.nan])
    # Only ranks survive: any monotone rescaling of a task's metric gives the same targets.
    raw = np.random.default_rng(0).lognormal(size=500) * 1e4
    z = copula_normalize(raw)
    np.testing.assert_allclose(copula_normalize(np.log(raw) - 7.0), z)
    assert abs(z.mean()) < 1e-9 and 0.97 < z.std() < 1.0
    assert kstest(z, "norm").pvalue > 0.99


# ----- encodings --------------------------------------------------------------------------
def test_arch_features_share_one_space_across_teachers():
    rng = random.Random(0)
    for space in (MINI, BASE):
        feats = arch_feature_matrix(space, [space.sample(rng) for _ in range(300)] + [space.smallest()])
        assert feats.shape == (301, feature_dim()) and np.isfinite(feats).all()
        fractions, costs = feats[:, :-3], feats[:, -3:]
        assert fractions.min() >= 0.0 and fractions.max() <= 1.0
        assert costs.max() <= 0.0 and costs.min() > -4.0
    top_mini, top_base = arch_features(MINI, MINI.largest()), arch_features(BASE, BASE.largest())
    np.testing.assert_array_equal(top_mini, top_base)
    np.testing.assert_array_equal(top_mini, np.r_[np.ones(feature_dim() - 3), np.zeros(3)])
    assert not np.allclose(arch_features(MINI, MINI.smallest()), arch_features(BASE, BASE.smallest()))
    # Layers are resampled over relative depth: a BERT-base arch that repeats each layer of a MiniLM arch
    # twice has the same per-layer slots, and both drop the same top share of the slots.
    mini = ArchConfig(4, 384, (12, 6, 4, 12), (1536, 384, 768, 1536))
    base = ArchConfig(8, 768, (12, 12, 6, 6, 4, 4, 12, 12), (3072, 3072, 768, 768, 1536, 1536, 3072, 3072))
    fm, fb = arch_features(MINI, mini), arch_features(BASE, base)
    np.testing.assert_allclose(fm[:-3], fb[:-3])
    assert fm[2:26].tolist() == [1.0] * 4 + [0.5] * 4 + [1 / 3] * 4 + [1.0] * 4 + [0.0] * 8
    with pytest.raises(ValueError, match="outside the space"):
        arch_features(MINI, base)


def test_task_embedding_layout_and_missing_anchors():
    scores = normalize_anchor_scores([0.3, None, 0.1, 0.2])
    np.testing.assert_allclose(scores[[0, 2, 3]], norm.ppf([2.5 / 3, 0.5 / 3, 1.5 / 3]))
    assert np.isnan(scores[1])
    meta = {"objective": "mlm", "higher_is_better": False, "seq_len": 512, "corpus_size": 10**9 - 1}
    emb = task_embedding(scores, meta)
    assert emb.shape == (task_embedding_dim(4),) == (12,)
    np.testing.assert_allclose(emb[:4], np.nan_to_num(scores))
    np.testing.assert_allclose(emb[4:], [0.75, 0, 1, 0, 0, -1, 1, 1])
    missing = task_embedding(None, {}, k=4)
    assert missing.shape == emb.shape and not missing.any()
    with pytest.raises(ValueError, match="pass k"):
        task_embedding(None, {})
    with pytest.raises(ValueError, match="3 anchor scores for k=4"):
        task_embedding([0.0, 1.0, 2.0], {}, k=4)


# ----- anchors --------------------------------------------------------------------------------
def test_anchors_deterministic_extreme_distinct_and_diverse(anchors):
    for sig, space in SPACES.items():
        got = anchors[sig]
        assert got == anchor_archs(space, K) and len(got) == K == len(set(got))
        assert got[:2] == [space.smallest(), space.largest()] and all(space.contains(a) for a in got)
        assert anchor_archs(space, 6) == got[:6]  # nested lists: a smaller K keeps a prefix
        assert anchor_archs(space, K, seed=1) != got
        feats = arch_feature_matrix(space, got)

        def min_dist(f: np.ndarray) -> float:
            d = np.linalg.norm(f[:, None] - f[None], axis=2)
            return float(d[np.triu_indices(len(f), 1)].min())

        rng = random.Random(5)
        random_min = max(min_dist(arch_feature_matrix(space, [space.sample(rng) for _ in range(K)])) for _ in range(10))
        assert min_dist(feats) > 1.5 * random_min
    with pytest.raises(ValueError, match="k must be >= 2"):
        anchor_archs(MINI, 1)


# ----- meta-training on a synthetic family -------------------------------------------------------
@pytest.fixture(scope="module")
def family(anchors):
    """16 source tasks (meta-trained with 4 held out for selection) and 6 unseen target tasks."""
    source = task_family("src", 16, 32, seed=0, anchors=anchors)
    target = build_training_set(task_family("tgt", 6, 64, seed=1, anchors=anchors), SPACES, anchors)
    predictor = meta_train(
        source, SPACES, val_tasks=0.25, seed=0, anchors=anchors, epochs_grid=(40, 80), weight_decay_grid=(1e-4, 1e-2)
    )
    return source, target, predictor


def test_meta_predictor_transfers_to_unseen_tasks(family):
    source, target, predictor = family
    card = predictor.card
    assert card["tasks"] == sorted(source) and len(card["val_tasks"]) == 4 and len(card["selection"]) == 4
    assert card["record_counts"] == {t: 48 for t in source} and set(card["anchors_scored"].values()) == {K}
    assert card["val_kendall_tau"] > 0.65 > card["val_kendall_tau_params_proxy"] + 0.2
    assert card["epochs"] in (40, 80) and card["weight_decay"] in (1e-4, 1e-2)

    untrained = MetaPredictor().fit(target.X_arch, target.X_task, target.y, target.groups, epochs=0)
    proxy = kendall_tau_by_group(target.params, target.y, target.groups)
    trained = kendall_tau_by_group(predictor.predict(target.X_arch, target.X_task)[0], target.y, target.groups)
    tau_untrained = mean_tau(untrained.predict(target.X_arch, target.X_task)[0], target.y, target.groups)
    tau_trained, tau_proxy = np.mean(list(trained.values())), np.mean(list(proxy.values()))
    print(f"held-out target tau: trained {tau_trained:.3f}, untrained {tau_untrained:.3f}, params {tau_proxy:.3f}")
    assert tau_trained > 0.7 and tau_trained > tau_untrained + 0.4 and tau_trained > tau_proxy + 0.25
    hard = [t for t in proxy if proxy[t] < 0.5]  # tasks where params is not the whole story
    assert len(hard) >= 2 and all(trained[t] > proxy[t] + 0.2 for t in hard)
    # The anchors carry the task: the same model with the no-anchor fallback embedding ranks much worse.
    fallback = target.X_task.copy()
    fallback[:, : K + 1] = 0.0
    tau_fallback = mean_tau(predictor.predict(target.X_arch, fallback)[0], target.y, target.groups)
    print(f"with the no-anchor fallback embedding: {tau_fallback:.3f}")
    assert tau_fallback < tau_trained - 0.3

    mean, std = predictor.predict(target.X_arch, target.X_task)
    assert mean.shape == std.shape == target.y.shape and (std > 0).all()
    np.testing.assert_allclose(predictor.rank_score(target.X_arch, target.X_task, beta=2.0), ucb(mean, std, 2.0))


def adapt_taus(predictor: MetaPredictor, target) -> tuple[list[float], list[float]]:
    """Per target task: tau on the unseen rows before and after adapting on the first 40 (16 anchors + 24 more)."""
    before, after = [], []
    for g in np.unique(target.groups):
        rows = np.flatnonzero(target.groups == g)
        seen, unseen = rows[:40], rows[40:]
        x_unseen, t_unseen = target.X_arch[unseen], target.X_task[unseen]
        original = predictor.predict(x_unseen, t_unseen)[0]
        adapted = predictor.adapt(target.X_arch[seen], target.X_task[seen], target.y[seen])
        before.append(kendalltau_of(original, target.y[unseen]))
        after.append(kendalltau_of(adapted.predict(x_unseen, t_unseen)[0], target.y[unseen]))
        np.testing.assert_array_equal(predictor.predict(x_unseen, t_unseen)[0], original)  # a copy was tuned
    return before, after


def kendalltau_of(scores: np.ndarray, y: np.ndarray) -> float:
    return mean_tau(scores, y, np.zeros(len(y)))


@pytest.mark.slow
def test_adapt_recovers_from_misleading_sources_and_keeps_a_good_prior(family, anchors):
    source, target, predictor = family
    data = build_training_set(source, SPACES, anchors)
    shuffled = data.y.copy()
    rng = np.random.default_rng(0)
    for g in np.unique(data.groups):
        rows = np.flatnonzero(data.groups == g)
        shuffled[rows] = rng.permutation(shuffled[rows])
    misled = MetaPredictor().fit(data.X_arch, data.X_task, shuffled, data.groups, epochs=80, seed=0)
    before, after = adapt_taus(misled, target)
    print(f"misled sources: tau {np.mean(before):.3f} before adapt, {np.mean(after):.3f} after")
    assert abs(np.mean(before)) < 0.2 and np.mean(after) > 0.6 and min(after) > 0.45
    good_before, good_after = adapt_taus(predictor, target)
    print(f"meta-trained sources: tau {np.mean(good_before):.3f} before adapt, {np.mean(good_after):.3f} after")
    assert np.mean(good_after) > np.mean(good_before) - 0.03 and np.mean(good_after) > np.mean(after)

    same = misled.adapt(target.X_arch[:3], target.X_task[:3], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(
        same.predict(target.X_arch, target.X_task)[0], misled.predict(target.X_arch, target.X_task)[0]
    )


def test_target_only_predictor_and_params_proxy(family):
    _, target, _ = family
    rows = np.flatnonzero(target.groups == target.groups[0])
    seen, unseen = rows[:40], rows[40:]
    model = TargetOnlyPredictor().fit(target.X_arch[seen], target.y[seen], epochs=80)
    tau = kendalltau_of(model.predict(target.X_arch[unseen])[0], target.y[unseen])
    print(f"target-only on 40 evaluations: tau {tau:.3f}")
    assert tau > 0.5
    np.testing.assert_allclose(
        model.rank_score(target.X_arch[unseen], beta=0.0), model.predict(target.X_arch[unseen])[0]
    )
    archs = [MINI.smallest(), MINI.largest(), MINI.uniform(4, 288, 8, 768)]
    proxy = params_proxy(MINI, archs)
    assert proxy.argsort().tolist() == [0, 2, 1] and proxy[1] == pytest.approx(np.log(MINI.params(MINI.largest())))


# ----- building the training set --------------------------------------------------------------------
def test_build_training_set_groups_meta_and_fallback(anchors):
    z = np.array([1.0, -1.0, 0.5])
    both = task_records("t", MINI, z, 10, 0, anchors[MINI.signature()]) + task_records(
        "t", BASE, z, 10, 1, anchors[BASE.signature()]
    )
    bare = [r for r in task_records("u", MINI, -z, 12, 2, anchors[MINI.signature()]) if r.origin != "anchor"]
    bare[0].fitness = -np.inf  # a failed evaluation: left out
    other = SearchSpace.from_teacher_config(
        BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    )
    stray = task_records("u", other, z, 2, 3, anchor_archs(other, K))
    data = build_training_set({"t": both, "u": bare + stray}, SPACES, anchors)
    assert data.record_counts == {f"t@{BASE.signature()}": 26, f"t@{MINI.signature()}": 26, "u": 11}
    assert set(data.task_of.values()) == {"t", "u"} and data.X_task.shape == (63, task_embedding_dim(K))
    assert data.anchors_scored["u"] == 0
    u = data.groups == "u"
    assert not data.X_task[u][:, : K + 1].any()  # no anchors: fallback embedding, marked missing
    t_rows = ~u
    assert (data.X_task[t_rows][:, K] == 1.0).all()
    # Objective and direction come from the records: metric "kd_loss", fitness = -metric.
    np.testing.assert_array_equal(data.X_task[0, K + 1 :], [1, 0, 0, 0, -1, 0, 0])
    for g in np.unique(data.groups):
        np.testing.assert_allclose(
            np.sort(data.y[data.groups == g]), np.sort(copula_normalize(np.arange(data.record_counts[g])))
        )
    half = [r for r in both if r.space_signature == MINI.signature() and r.arch not in anchors[MINI.signature()][::2]]
    emb, n_scored = task_embedding_from_records(half, anchors[MINI.signature()])
    assert n_scored == K // 2 and emb[K] == 0.5 and not emb[:K:2].any() and emb[1:K:2].all()
    with pytest.raises(ValueError, match="no usable records"):
        build_training_set({"u": stray}, SPACES, anchors)


# ----- persistence ---------------------------------------------------------------------------------------
def rewrite(src, dst, **meta_changes):
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, change in meta_changes.items():
        meta[key] = change(meta[key])
    save_file(tensors, str(dst), metadata=meta)


def test_save_load_round_trip_and_bad_files(family, tmp_path):
    _, target, predictor = family
    path = predictor.save(tmp_path / "predictor.safetensors")
    loaded = MetaPredictor.load(path, task_dim=task_embedding_dim(K))
    for a, b in zip(loaded.predict(target.X_arch, target.X_task), predictor.predict(target.X_arch, target.X_task)):
        np.testing.assert_array_equal(a, b)
    assert loaded.card == json.loads(json.dumps(predictor.card))
    assert loaded.encoding == {"max_layers": 24, "seq_len": 128, "anchor_k": K, "anchor_seed": 0}
    with pytest.raises(ValueError, match="feature dims"):
        loaded.predict(target.X_arch[:, :-1], target.X_task)

    rewrite(path, tmp_path / "v2.safetensors", version=lambda v: "2")
    with pytest.raises(ValueError, match=r"v2.safetensors is from format version 2, this metanas reads version 1"):
        MetaPredictor.load(tmp_path / "v2.safetensors")
    rewrite(
        path,
        tmp_path / "dim.safetensors",
        config=lambda c: json.dumps({**json.loads(c), "encoding": {**json.loads(c)["encoding"], "max_layers": 12}}),
    )
    with pytest.raises(ValueError, match="expects 59 arch features, but this metanas encodes archs in 35"):
        MetaPredictor.load(tmp_path / "dim.safetensors")
    rewrite(path, tmp_path / "meta.safetensors", config=lambda c: json.dumps({**json.loads(c), "hidden": 32}))
    with pytest.raises(ValueError, match=r"tensor w0 has shape \(5, 83, 64\), its config implies \(5, 83, 32\)"):
        MetaPredictor.load(tmp_path / "meta.safetensors")
    rewrite(path, tmp_path / "cfg.safetensors", config=lambda c: c[:-5])
    with pytest.raises(ValueError, match="has damaged metadata"):
        MetaPredictor.load(tmp_path / "cfg.safetensors")
    with pytest.raises(ValueError, match="expects 24 task-embedding features, got 20"):
        MetaPredictor.load(path, task_dim=20)

    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a predictor at all")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    for name, message in (
        ("cut", "damaged or not a safetensors"),
        ("junk", "damaged or not a safetensors"),
        ("flip", "do not match the stored checksum"),
    ):
        with pytest.raises(ValueError, match=message):
            MetaPredictor.load(tmp_path / f"{name}.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a metanas meta-predictor"):
        MetaPredictor.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        MetaPredictor.load(tmp_path / "missing.safetensors")
    with pytest.raises(RuntimeError, match="not trained"):
        MetaPredictor().save(tmp_path / "untrained.safetensors")


def test_meta_train_reads_a_history_store(tmp_path, anchors):
    records = task_family("db", 3, 8, seed=3, anchors=anchors)
    with HistoryStore(tmp_path / "history.db") as store:
        store.add_records([r for recs in records.values() for r in recs])
        out = tmp_path / "meta.safetensors"
        predictor = meta_train(
            store,
            list(SPACES.values()),
            tasks=["db0", "db1"],
            val_tasks=["db1"],
            seed=0,
            out_path=out,
            anchors=anchors,
            epochs_grid=(5,),
            weight_decay_grid=(1e-3,),
        )
    card = MetaPredictor.load(out).card
    assert card == json.loads(json.dumps(predictor.card))
    assert card["tasks"] == ["db0", "db1"] and card["train_tasks"] == ["db0"] and card["val_tasks"] == ["db1"]
    assert card["record_counts"] == {"db0": 24, "db1": 24} and -1.0 <= card["val_kendall_tau"] <= 1.0
    with pytest.raises(ValueError, match=r"validation tasks \['nope'\] have no records"):
        meta_train(records, SPACES, val_tasks=["nope"], anchors=anchors)
    with pytest.raises(ValueError, match=r"tasks \['db7'\] have no records"):
        meta_train(records, SPACES, tasks=["db0", "db7"], anchors=anchors)
    with pytest.raises(ValueError, match="every task is a validation task"):
        meta_train(records, SPACES, tasks=["db0"], val_tasks=["db0"], anchors=anchors)
