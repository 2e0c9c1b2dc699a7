"""A sentence-transformers teacher gives a sentence-transformers student; exported tokenizer files are clean."""

import json

import pytest
import torch
from helpers import tiny_teacher_dir

import metanas
from metanas import ArchConfig
from metanas.objectives.losses import mean_pool

st = pytest.importorskip("sentence_transformers", reason="needs the sentence-transformers extra")

TEXTS = ["the cat sat on the mat", "a dog ran", "numbers 12 and 7 are here, and more words follow"]


@pytest.fixture(scope="module")
def st_teacher(tmp_path_factory):
    """A tiny random BERT saved as a sentence-transformers model: Transformer, mean Pooling, Normalize."""
    root = tmp_path_factory.mktemp("st")
    hf_dir = tiny_teacher_dir(root / "hf")
    from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(str(hf_dir), max_seq_length=48)
    model = st.SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"), Normalize()])
    model.save(str(root / "st"))
    return root / "st"


def hf_path_embeddings(model_dir, texts, trust_remote_code=False):
    """What the student computes without sentence-transformers: AutoModel, mean pooling, L2 normalisation."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    return torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1)


@pytest.mark.parametrize("arch", [ArchConfig(2, 32, (4, 4), (64, 64)), ArchConfig(2, 24, (3, 2), (32, 64))])
def test_st_teacher_gives_an_st_student(st_teacher, tmp_path, arch):
    sn = metanas.ElasticBert.from_teacher(str(st_teacher))
    out = metanas.export(sn, arch, tmp_path / "student")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    dims = {pooling.get(k) for k in ("word_embedding_dimension", "embedding_dimension")} - {None}
    assert dims == {arch.hidden} and (pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens"))
    for name in ("sentence_bert_config.json", "config_sentence_transformers.json"):  # carried over as they are
        assert json.loads((out / name).read_text()) == json.loads((st_teacher / name).read_text())
    vanilla = json.loads((out / "metanas_arch.json").read_text())["vanilla"]
    student = st.SentenceTransformer(str(out), trust_remote_code=not vanilla)
    got = torch.as_tensor(student.encode(TEXTS))
    assert got.shape == (len(TEXTS), arch.hidden)
    ref = hf_path_embeddings(out, TEXTS, trust_remote_code=not vanilla)
    assert (got - ref).abs().max() <= 1e-5


def test_largest_arch_student_encodes_like_the_teacher(st_teacher, tmp_path):
    sn = metanas.ElasticBert.from_teacher(str(st_teacher))
    out = metanas.export(sn, sn.space.largest(), tmp_path / "student")
    got = st.SentenceTransformer(str(out)).encode(TEXTS)
    ref = st.SentenceTransformer(str(st_teacher)).encode(TEXTS)
    assert abs(got - ref).max() <= 1e-5


def test_plain_teacher_gives_a_plain_export_with_clean_tokenizer_files(tmp_path):
    from transformers import AutoTokenizer

    teacher = tiny_teacher_dir(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(str(teacher), local_files_only=True)
    sn = metanas.ElasticBert.from_teacher(str(teacher))
    out = metanas.export(sn, sn.space.smallest(), tmp_path / "student", tokenizer=tok)
    assert not (out / "modules.json").exists()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local", "cache_dir", "token", "name_or_path"} & set(config)
    copied = metanas.export(sn, sn.space.smallest(), tmp_path / "copied")  # tokenizer files copied from the teacher
    assert "local_files_only" not in json.loads((copied / "tokenizer_config.json").read_text())
