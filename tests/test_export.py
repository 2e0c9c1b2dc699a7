import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import tiny_tokenizer
from tiny_models import random_batch, tiny_teacher

import metanas
from metanas import ArchConfig
from metanas.supernet.convert import TeacherLoadError, load_teacher_model
from metanas.supernet.export import build_subnet_model, is_vanilla

RELOAD = textwrap.dedent(
    """
    import sys
    sys.modules["metanas"] = None  # metanas must not be importable in this process
    import torch
    from transformers import AutoModel
    results = {}
    for model_dir in sys.argv[2:]:
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
        batch = torch.load(model_dir + "/batch.pt")
        with torch.no_grad():
            out = model(input_ids=batch["ids"], attention_mask=batch["mask"]).last_hidden_state
        n = sum(p.numel() for p in model.parameters())
        results[model_dir] = {"out": out, "params": n, "cls": type(model).__name__}
    torch.save(results, sys.argv[1])
    """
)

CASES = [
    ("bert", ArchConfig(2, 28, (3, 3), (32, 32)), False),  # heads*head_dim != hidden
    ("bert", ArchConfig(2, 16, (2, 2), (48, 48)), True),
    ("roberta", ArchConfig(3, 28, (4, 1, 2), (64, 16, 32)), False),
    ("roberta", ArchConfig(2, 24, (3, 3), (16, 16)), True),
    ("electra", ArchConfig(2, 32, (4, 4), (16, 16)), True),
    ("electra", ArchConfig(2, 24, (1, 4), (16, 64)), False),
]


@pytest.mark.slow
def test_export_round_trip_in_fresh_process(tmp_path):
    """Vanilla and custom exports reload with AutoModel in a process where metanas is absent."""
    tok = tiny_tokenizer(tmp_path / "tok")
    expected = {}
    for i, (kind, arch, vanilla) in enumerate(CASES):
        teacher = tiny_teacher(kind)
        sn = metanas.ElasticBert.from_teacher(teacher)
        assert is_vanilla(sn, arch) == vanilla
        out_dir = metanas.export(sn, arch, tmp_path / f"model{i}", tokenizer=tok)
        files = {p.name for p in out_dir.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "metanas_arch.json"} <= files
        assert ("modeling_metanas_bert.py" in files) == (not vanilla)
        assert ("auto_map" in json.loads((out_dir / "config.json").read_text())) == (not vanilla)
        saved = json.loads((out_dir / "metanas_arch.json").read_text())
        assert ArchConfig.from_dict(saved["arch"]) == arch
        ids, mask = random_batch(pad_id=teacher.config.pad_token_id, seed=i)
        torch.save({"ids": ids, "mask": mask}, out_dir / "batch.pt")
        with torch.no_grad():
            ref = sn(ids, attention_mask=mask, arch=arch).last_hidden_state
        expected[str(out_dir)] = (ref, sn.space.params(arch), vanilla)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out.pt"), *expected],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    for model_dir, (ref, params, vanilla) in expected.items():
        assert (got[model_dir]["out"] - ref).abs().max() <= 1e-5
        assert got[model_dir]["params"] == params
        assert (got[model_dir]["cls"] == "MetanasBertModel") == (not vanilla)


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_param_formula_equals_numel_for_random_archs(kind):
    sn = metanas.ElasticBert.from_teacher(tiny_teacher(kind))
    rng = random.Random(0)
    for _ in range(50):
        arch = sn.space.sample(rng)
        model = build_subnet_model(sn, arch)
        assert sum(p.numel() for p in model.parameters()) == sn.space.params(arch), arch
        embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
        assert sn.space.params(arch, embeddings=False) == sn.space.params(arch) - embeddings


def test_a_custom_student_names_the_bert_family_and_needs_its_code_to_load(tmp_path):
    """config.json says `bert` (so AutoTokenizer never asks to run code); the model loads only through auto_map."""
    from transformers import AutoModel

    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    arch = ArchConfig(2, 16, (3, 2), (16, 32))
    out = metanas.export(sn, arch, tmp_path / "m", tokenizer=tiny_tokenizer(tmp_path / "tok"))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["auto_map"]["AutoModel"].endswith("MetanasBertModel")
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "MetanasBertModel" and model.config.layer_heads == [3, 2]
    with pytest.raises((RuntimeError, ValueError)):  # a uniform BertModel: its weights do not fit, it never loads
        AutoModel.from_pretrained(out)
    with pytest.raises(TeacherLoadError, match="metanas student"):
        load_teacher_model(out)


def test_export_failure_leaves_nothing(tmp_path):
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))  # in-memory: no tokenizer files to copy
    with pytest.raises(ValueError, match="no teacher path"):
        metanas.export(sn, sn.space.smallest(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="outside the space"):
        metanas.export(sn, ArchConfig(1, 17, (1,), (16,)), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_unless_asked(tmp_path):
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    tok = tiny_tokenizer(tmp_path / "tok")
    target = tmp_path / "m"
    metanas.export(sn, sn.space.smallest(), target, tokenizer=tok)
    with pytest.raises(FileExistsError, match="already exists"):
        metanas.export(sn, sn.space.largest(), target, tokenizer=tok)
    metanas.export(sn, sn.space.largest(), target, tokenizer=tok, overwrite=True)
    assert json.loads((target / "metanas_arch.json").read_text())["arch"]["depth"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "tok"]
