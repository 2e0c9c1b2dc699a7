import json
import random

import pytest
from transformers import BertConfig

from metanas import ArchConfig, SearchSpace


def minilm_like_space(**overrides) -> SearchSpace:
    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return SearchSpace.from_teacher_config(cfg, **overrides)


def test_defaults_derived_from_teacher():
    space = minilm_like_space()
    assert space.depth_choices == (2, 3, 4, 5, 6)
    assert space.hidden_choices == (192, 240, 288, 336, 384)
    assert space.head_choices == (4, 6, 8, 10, 12)
    assert space.ffn_choices == (384, 768, 1152, 1536)
    assert space.head_dim == 32
    assert space.largest() == ArchConfig(6, 384, (12,) * 6, (1536,) * 6)
    assert space.smallest() == ArchConfig(2, 192, (4,) * 2, (384,) * 2)


def test_overrides_and_unknown_override():
    space = minilm_like_space(depth_choices=(4, 6), ffn_choices=(768, 1536))
    assert space.depth_choices == (4, 6)
    assert space.size() == 5 * (10**4 + 10**6)  # 5 hidden x (5 heads x 2 ffn) per layer
    with pytest.raises(ValueError, match="hidden_choice.*allowed"):
        minilm_like_space(hidden_choice=(1,))
    with pytest.raises(ValueError, match="exceeds the teacher"):
        minilm_like_space(depth_choices=(8,))


def test_size_counts_distinct_archs():
    space = minilm_like_space(depth_choices=(1, 2), hidden_choices=(192, 384), head_choices=(6, 12), ffn_choices=(768,))
    seen = {space.sample(random.Random(i)) for i in range(2000)}
    assert space.size() == 2 * (2 + 4) == len(seen)


def test_arch_json_round_trip_and_hash():
    space = minilm_like_space()
    rng = random.Random(0)
    for _ in range(20):
        arch = space.sample(rng)
        again = ArchConfig.from_json(arch.to_json())
        assert again == arch and hash(again) == hash(arch)
        assert json.loads(arch.to_json())["heads"] == list(arch.heads)
    with pytest.raises(AttributeError):
        arch.depth = 3  # frozen


def test_arch_validation_names_field_value_and_allowed():
    space = minilm_like_space()
    with pytest.raises(ValueError, match=r"arch.hidden=100 .*allowed: \[192, 240, 288, 336, 384\]"):
        space.validate(ArchConfig(2, 100, (4, 4), (384, 384)))
    with pytest.raises(ValueError, match=r"arch.heads\[1\]=5 .*allowed: \[4, 6, 8, 10, 12\]"):
        space.validate(ArchConfig(2, 192, (4, 5), (384, 384)))
    with pytest.raises(ValueError, match=r"arch.depth=7 .*allowed"):
        space.validate(ArchConfig(7, 192, (4,) * 7, (384,) * 7))
    with pytest.raises(ValueError, match="ArchConfig.ffn: needs one value per layer"):
        ArchConfig(2, 192, (4, 4), (384,))
    with pytest.raises(ValueError, match="keys must be"):
        ArchConfig.from_json('{"depth": 1, "hidden": 2, "heads": [1], "ffn": [1], "extra": 1}')
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchConfig.from_json("{")


def test_sampling_is_uniform_per_dimension_and_seeded():
    space = minilm_like_space()
    a = [space.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(5000)]
    assert all(space.contains(x) for x in archs)
    depth_counts = {d: sum(x.depth == d for x in archs) for d in space.depth_choices}
    assert all(abs(c / 5000 - 1 / 5) < 0.03 for c in depth_counts.values())
    heads = [h for x in archs for h in x.heads]
    assert all(abs(heads.count(c) / len(heads) - 1 / 5) < 0.02 for c in space.head_choices)


def test_mutation_probabilities():
    space = minilm_like_space()
    rng = random.Random(3)
    base = space.largest()
    assert space.mutate(base, rng, prob=0.0, depth_prob=0.0, hidden_prob=0.0) == base
    n, changed_layers = 3000, 0
    for _ in range(n):
        child = space.mutate(base, rng, prob=0.2, depth_prob=0.0, hidden_prob=0.0)
        assert space.contains(child) and child.depth == base.depth
        changed_layers += sum(h != 12 for h in child.heads)
    # each layer's heads are resampled with p=0.2 and then differ with p=4/5
    assert abs(changed_layers / (n * 6) - 0.2 * 0.8) < 0.02
    with pytest.raises(ValueError, match="prob must be in"):
        space.mutate(base, rng, prob=1.5)


def test_crossover_takes_genes_from_parents():
    space = minilm_like_space()
    rng = random.Random(5)
    a, b = space.largest(), space.smallest()
    for _ in range(200):
        child = space.crossover(a, b, rng)
        assert space.contains(child)
        assert child.depth in (a.depth, b.depth) and child.hidden in (a.hidden, b.hidden)
        for i in range(child.depth):
            assert child.heads[i] in (12, 4) and child.ffn[i] in (1536, 384)
    assert space.crossover(a, b, rng, prob=0.0) == a
    assert space.crossover(a, b, rng, prob=1.0) == b


def test_params_and_flops_formulas_known_values():
    space = minilm_like_space()
    # all-MiniLM-L6-v2 has 22,713,216 parameters including the pooler
    assert space.params(space.largest()) == 22_713_216
    assert space.params(space.largest(), embeddings=False) == 22_713_216 - (30522 + 512 + 2) * 384
    # per token, one layer: 2*(4*h*h) projections + 4*S*h attention + 4*h*f FFN
    h, f, s = 384, 1536, 128
    assert space.flops(space.largest(), seq_len=s) == 6 * (8 * h * h + 4 * s * h + 4 * h * f)
    assert space.flops(space.smallest(), 128) < space.flops(space.largest(), 128)
    with pytest.raises(ValueError, match="seq_len"):
        space.flops(space.largest(), 0)


def test_space_dict_round_trip_and_signature():
    space = minilm_like_space()
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.signature() == space.signature()
    assert minilm_like_space(depth_choices=(3, 6)).signature() != space.signature()
