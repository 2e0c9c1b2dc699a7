import random

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import random_batch, tiny_teacher
from transformers import GPT2Config

import metanas
from metanas import ArchConfig
from metanas.supernet.convert import TeacherLoadError
from metanas.supernet.export import build_subnet_model
from metanas.supernet.rewire import rewire

KINDS = ["bert", "roberta", "electra"]


@pytest.mark.parametrize("kind", KINDS)
def test_largest_arch_reproduces_tiny_teacher(kind):
    teacher = tiny_teacher(kind)
    sn = metanas.ElasticBert.from_teacher(teacher)
    ids, mask = random_batch(pad_id=teacher.config.pad_token_id)
    with torch.no_grad():
        ref = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        out = sn(ids, attention_mask=mask, output_hidden_states=True)
    assert (ref.last_hidden_state - out.last_hidden_state).abs().max() <= 1e-5
    assert len(out.hidden_states) == len(ref.hidden_states) == 4
    for a, b in zip(ref.hidden_states, out.hidden_states):
        assert (a - b).abs().max() <= 1e-5
    if kind != "electra":
        assert (ref.pooler_output - out.pooler_output).abs().max() <= 1e-5
    else:
        assert out.pooler_output is None


def test_padding_is_ignored_like_the_teacher():
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    ids, mask = random_batch()
    arch = sn.space.sample(random.Random(0))
    with torch.no_grad():
        full = sn(ids, attention_mask=mask, arch=arch).last_hidden_state
        alone = sn(ids[:1, :7], attention_mask=mask[:1, :7], arch=arch).last_hidden_state
    assert (full[0, :7] - alone[0]).abs().max() <= 1e-5


def test_active_arch_outputs_shapes_and_extras():
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    arch = ArchConfig(2, 24, (2, 3), (32, 16))
    ids, mask = random_batch()
    sn.set_arch(arch)
    with torch.no_grad():
        out = sn(ids, attention_mask=mask, output_attentions=True, output_qkv=[-1], output_hidden_states=True)
        passed = sn(ids, attention_mask=mask, arch=arch)
        fast = sn(ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (3, 12, 24)
    assert [a.shape for a in out.attentions] == [(3, 2, 12, 12), (3, 3, 12, 12)]
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(3, 2, 12))
    assert out.attentions[0][0, :, :, 7:].abs().max() == 0  # padded keys get no attention
    assert len(out.qkv) == 1 and [t.shape for t in out.qkv[0]] == [(3, 12, 24)] * 3
    # the explicit-softmax path (for attentions) equals the SDPA path
    assert (out.last_hidden_state - fast.last_hidden_state).abs().max() <= 1e-5
    assert torch.equal(passed.last_hidden_state, fast.last_hidden_state)
    with pytest.raises(ValueError, match="arch.hidden=21 is outside the space"):
        sn(ids, arch=ArchConfig(1, 21, (2,), (32,)))


def test_subnet_gradients_touch_only_the_active_prefix():
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert")).train()
    arch = ArchConfig(1, 16, (2,), (16,))
    ids, mask = random_batch()
    sn(ids, attention_mask=mask, arch=arch).last_hidden_state.sum().backward()
    q = sn.encoder.layer[0].attention.self.query.weight.grad
    assert q[:16, :16].abs().sum() > 0 and q[16:].abs().sum() == 0 and q[:, 16:].abs().sum() == 0
    assert sn.encoder.layer[1].attention.self.query.weight.grad is None


@pytest.mark.parametrize("importance", ["activation", "gradient"])
@pytest.mark.parametrize("kind", KINDS)
def test_rewiring_keeps_the_largest_arch(kind, importance):
    """Heads, FFN neurons and hidden channels permuted: the largest arch is the teacher with its
    output channels in `hidden_order`, and the exported largest arch is the teacher exactly."""
    teacher = tiny_teacher(kind)
    sn = metanas.ElasticBert.from_teacher(teacher)
    ids, mask = random_batch(pad_id=teacher.config.pad_token_id)
    calib_ids, calib_mask = random_batch(pad_id=teacher.config.pad_token_id, seed=1)
    before = sn.encoder.layer[0].intermediate.dense.weight.clone()
    perms = rewire(sn, {"input_ids": calib_ids, "attention_mask": calib_mask}, importance)
    assert perms["heads"][0] != list(range(4)) or perms["ffn"][0] != list(range(64))
    assert sorted(perms["hidden"]) == list(range(32)) and perms["hidden"] != list(range(32))
    assert sn.hidden_order == perms["hidden"]
    assert not torch.equal(before, sn.encoder.layer[0].intermediate.dense.weight)
    with torch.no_grad():
        ref = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
        out = sn(ids, attention_mask=mask).last_hidden_state
        exported = build_subnet_model(sn, sn.space.largest())(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ref[..., perms["hidden"]] - out).abs().max() <= 1e-5
    assert (ref - exported).abs().max() <= 1e-5


def test_rewiring_sorts_units_by_importance():
    from metanas.supernet.rewire import unit_importance

    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    ids, mask = random_batch(seed=2)
    batch = {"input_ids": ids, "attention_mask": mask}
    rewire(sn, batch)
    heads, ffn = unit_importance(sn, batch)
    for h, f in zip(heads, ffn):
        assert torch.all(h[:-1] >= h[1:] - 1e-6) and torch.all(f[:-1] >= f[1:] - 1e-6)


def test_unsupported_model_type_lists_supported(tmp_path):
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(TeacherLoadError, match="'gpt2' is not supported; supported model types: bert, roberta"):
        metanas.ElasticBert.from_teacher(str(tmp_path))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(TeacherLoadError, match="has no config.json"):
        metanas.ElasticBert.from_teacher(str(tmp_path))
    with pytest.raises(TeacherLoadError, match="does not exist"):
        metanas.ElasticBert.from_teacher(str(tmp_path / "nope" / "model"))
    teacher = tiny_teacher("bert")
    teacher.save_pretrained(tmp_path / "t")
    weights = tmp_path / "t" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TeacherLoadError, match="model.safetensors complete and uncorrupted"):
        metanas.ElasticBert.from_teacher(str(tmp_path / "t"))
    save_file({"x": torch.zeros(2)}, str(weights))
    with pytest.raises(TeacherLoadError):
        metanas.ElasticBert.from_teacher(str(tmp_path / "t"))


def test_from_saved_directory_matches(tmp_path):
    teacher = tiny_teacher("roberta")
    teacher.save_pretrained(tmp_path)
    sn = metanas.ElasticBert.from_teacher(str(tmp_path))
    assert sn.source == str(tmp_path)
    ids, mask = random_batch(pad_id=1)
    with torch.no_grad():
        diff = teacher(input_ids=ids, attention_mask=mask).last_hidden_state - sn(ids, attention_mask=mask)[0]
    assert diff.abs().max() <= 1e-5
