"""Which layers a subnet keeps (first k, or k spread evenly ending at the last), and hidden rewiring in export."""

import random

import numpy as np
import pytest
import torch
from tiny_models import random_batch, tiny_teacher

import metanas
from metanas import ArchConfig, SearchSpace
from metanas.meta.encoding import arch_features
from metanas.space import layer_indices
from metanas.supernet.export import build_subnet_model, load_subnet_weights
from metanas.supernet.rewire import rewire

KINDS = ["bert", "roberta", "electra"]


def both_selections(teacher):
    return SearchSpace.from_teacher_config(teacher.config, layer_selection_choices=["spread", "first"])


def test_spread_indices_keep_the_last_layer():
    assert layer_indices("spread", 3, 6) == (1, 3, 5)  # DistilBERT's every other layer
    assert layer_indices("spread", 4, 6) == (0, 2, 3, 5)
    assert layer_indices("spread", 2, 6) == (2, 5)
    assert layer_indices("spread", 6, 6) == tuple(range(6)) == layer_indices("first", 6, 6)
    assert layer_indices("first", 2, 6) == (0, 1)
    for k in range(1, 13):
        idx = layer_indices("spread", k, 12)
        assert len(set(idx)) == k and idx[-1] == 11 and list(idx) == sorted(idx)
    with pytest.raises(ValueError, match=r"layer_selection='every' is unknown; allowed: \['first', 'spread'\]"):
        layer_indices("every", 2, 6)


def test_arch_json_keeps_old_archs_unchanged():
    old = ArchConfig(2, 32, (4, 2), (64, 32))
    assert old.to_dict() == {"depth": 2, "hidden": 32, "heads": [4, 2], "ffn": [64, 32]}
    spread = ArchConfig(2, 32, (4, 2), (64, 32), "spread")
    assert spread.to_dict()["layer_selection"] == "spread" and ArchConfig.from_json(spread.to_json()) == spread
    assert spread != old and hash(spread) != hash(old)
    with pytest.raises(ValueError, match="ArchConfig.layer_selection='odd' is unknown"):
        ArchConfig(1, 32, (4,), (64,), "odd")
    with pytest.raises(ValueError, match="optionally 'layer_selection'"):
        ArchConfig.from_dict({**old.to_dict(), "layers": [0, 1]})


def test_space_signature_and_choices():
    teacher = tiny_teacher("bert")
    plain = SearchSpace.from_teacher_config(teacher.config)
    assert "layer_selection_choices" not in plain.to_dict()  # signatures of existing spaces are unchanged
    space = both_selections(teacher)
    assert space.layer_selection_choices == ("first", "spread") and space.signature() != plain.signature()
    assert SearchSpace.from_dict(space.to_dict()) == space
    spread = ArchConfig(2, 32, (4, 4), (64, 64), "spread")
    with pytest.raises(ValueError, match=r"arch.layer_selection='spread' is outside the space; allowed: \['first'\]"):
        plain.validate(spread)
    assert space.validate(spread) is spread
    # Full depth: both selections keep every layer, so the space counts it once and names it "first".
    full = space.largest()
    assert space.canonical(ArchConfig(3, 32, full.heads, full.ffn, "spread")) == full
    per_layer = len(space.head_choices) * len(space.ffn_choices)
    depths = space.depth_choices
    expected = len(space.hidden_choices) * sum(per_layer**d * (2 if d < 3 else 1) for d in depths)
    assert space.size() == expected
    with pytest.raises(ValueError, match="layer_selection_choices"):
        SearchSpace.from_teacher_config(teacher.config, layer_selection_choices=["middle"])


def test_sampling_and_variation_use_both_selections_deterministically():
    space = both_selections(tiny_teacher("bert"))
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(200)]
    assert archs == [space.sample(r) for r in [random.Random(0)] for _ in range(200)]
    assert {a.layer_selection for a in archs if a.depth < 3} == {"first", "spread"}
    assert all(a.layer_selection == "first" for a in archs if a.depth == 3)  # canonical
    children = [space.mutate(a, rng) for a in archs] + [space.crossover(a, b, rng) for a, b in zip(archs, archs[1:])]
    assert all(space.canonical(c) == c and space.contains(c) for c in children)
    assert {c.layer_selection for c in children} == {"first", "spread"}
    shrunk = [space.shrink(a, rng) for a in archs if a.layer_selection == "spread"]
    assert all(s is None or space.contains(s) for s in shrunk)
    # A space with one selection draws exactly what it drew before layer selection existed.
    plain = SearchSpace.from_teacher_config(tiny_teacher("bert").config)
    r1, r2 = random.Random(3), random.Random(3)
    for _ in range(20):
        d = r2.choice(plain.depth_choices)
        h = r2.choice(plain.hidden_choices)
        heads = tuple(r2.choice(plain.head_choices) for _ in range(d))
        ffn = tuple(r2.choice(plain.ffn_choices) for _ in range(d))
        assert plain.sample(r1) == ArchConfig(d, h, heads, ffn)


def test_costs_do_not_depend_on_which_layers():
    space = both_selections(tiny_teacher("bert"))
    first = ArchConfig(2, 24, (4, 2), (64, 32))
    spread = ArchConfig(2, 24, (4, 2), (64, 32), "spread")
    assert space.params(first) == space.params(spread) and space.flops(first) == space.flops(spread)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rewired", [False, True])
def test_supernet_and_export_run_the_kept_layers(kind, rewired):
    """A spread subnet runs teacher layers (0, 2) of 3; its export is the same function (vanilla or not),
    with or without hidden rewiring, and writing the export's weights back is exact."""
    teacher = tiny_teacher(kind)
    sn = metanas.ElasticBert.from_teacher(teacher, space_overrides={"layer_selection_choices": ["first", "spread"]})
    ids, mask = random_batch(pad_id=teacher.config.pad_token_id)
    if rewired:
        calib, calib_mask = random_batch(pad_id=teacher.config.pad_token_id, seed=1)
        rewire(sn, {"input_ids": calib, "attention_mask": calib_mask})
    full = sn.space.largest()
    uniform = ArchConfig(2, 32, (4, 4), (64, 64), "spread")
    mixed = ArchConfig(2, 24, (2, 4), (64, 16), "spread")
    assert sn.space.layer_indices(uniform) == (0, 2)
    for arch in (uniform, mixed):
        with torch.no_grad():
            out = sn(ids, attention_mask=mask, arch=arch).last_hidden_state
            model = build_subnet_model(sn, arch)
            exported = model(input_ids=ids, attention_mask=mask).last_hidden_state
        order = sn.hidden_order
        if order is not None:  # export sorts the kept channels by the teacher channel they hold
            out = out[..., torch.argsort(torch.tensor(order[: arch.hidden]))]
        assert (out - exported).abs().max() <= 1e-5
        first = ArchConfig(arch.depth, arch.hidden, arch.heads, arch.ffn)
        with torch.no_grad():
            other = sn(ids, attention_mask=mask, arch=first).last_hidden_state
        assert (sn(ids, attention_mask=mask, arch=arch).last_hidden_state - other).abs().max() > 1e-3
        # The inverse of export: perturbed weights written back give the supernet the model's function.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
            load_subnet_weights(sn, arch, model)
            back = sn(ids, attention_mask=mask, arch=arch).last_hidden_state
            if order is not None:
                back = back[..., torch.argsort(torch.tensor(order[: arch.hidden]))]
            assert (back - model(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max() <= 1e-5
    with torch.no_grad():
        assert (sn(ids, attention_mask=mask, arch=full).last_hidden_state.abs().sum()) > 0


def test_distilbert_style_layer_drop_matches_hand_built_model():
    """depth 1 of 3, spread, is the teacher's last layer alone: check it against a BertModel built by hand."""
    teacher = tiny_teacher("bert")
    sn = metanas.ElasticBert.from_teacher(
        teacher, space_overrides={"layer_selection_choices": ["first", "spread"], "depth_choices": [1, 2, 3]}
    )
    arch = ArchConfig(1, 32, (4,), (64,), "spread")
    assert sn.space.layer_indices(arch) == (2,)
    hand = tiny_teacher("bert")
    hand.encoder.layer = torch.nn.ModuleList([hand.encoder.layer[2]])
    hand.config.num_hidden_layers = 1
    ids, mask = random_batch()
    with torch.no_grad():
        ref = hand(input_ids=ids, attention_mask=mask).last_hidden_state
        out = sn(ids, attention_mask=mask, arch=arch).last_hidden_state
    assert (ref - out).abs().max() <= 1e-5


def test_encoding_places_kept_layers_at_their_depth():
    space = both_selections(tiny_teacher("bert"))
    first = ArchConfig(2, 32, (4, 2), (64, 32))
    spread = ArchConfig(2, 32, (4, 2), (64, 32), "spread")
    f, s = arch_features(space, first, max_layers=3), arch_features(space, spread, max_layers=3)
    heads_first, heads_spread = f[2:5], s[2:5]
    np.testing.assert_allclose(heads_first, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(heads_spread, [1.0, 0.0, 0.5])
    np.testing.assert_allclose(f[8:], s[8:])  # aggregates and costs agree


def test_tpe_parameters_name_the_selection_only_when_searched():
    pytest.importorskip("optuna")
    from metanas.search.tpe import arch_from_params, tpe_distributions, tpe_params

    teacher = tiny_teacher("bert")
    plain, space = SearchSpace.from_teacher_config(teacher.config), both_selections(teacher)
    assert "layer_selection" not in tpe_distributions(plain) and "layer_selection" in tpe_distributions(space)
    arch = ArchConfig(2, 32, (4, 2), (64, 32), "spread")
    assert arch_from_params(tpe_params(space, arch), space) == arch
    full = space.largest()
    params = {**tpe_params(space, full), "layer_selection": "spread"}
    assert arch_from_params(params, space) == full
