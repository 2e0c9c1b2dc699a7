"""An exported student's tokenizer loads where metanas is not installed, as the teacher's tokenizer, without asking.

A non-uniform student's config.json names metanas' own model class (`auto_map`), which
transformers 5 reads in every `AutoTokenizer.from_pretrained` call, before
tokenizer_config.json. Its `model_type` is the BERT family's, so that call finds local
code and never asks whether to run the student's; `trust_remote_code=False` loads the
tokenizer too, without importing that code, and an older teacher (a bare vocab.txt)
still gives a student whose tokenizer loads.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import transformers
from helpers import tiny_teacher_dir

import metanas
from metanas import ArchConfig

TEXTS = ["the cat sat on the mat", "numbers 12 and 7, then zebra!"]
UNIFORM = ArchConfig(2, 16, (2, 2), (48, 48))
NON_UNIFORM = ArchConfig(2, 24, (3, 2), (32, 64))
PROMPT_MARKERS = ("[y/N]", "custom code")

LOAD = textwrap.dedent(
    """
    import json, sys, time
    sys.modules["metanas"] = None  # metanas must not be importable in this process
    from transformers import AutoTokenizer
    kwargs = json.loads(sys.argv[2])
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(sys.argv[1], **kwargs)
    seconds = time.perf_counter() - start
    ids = [tok(t)["input_ids"] for t in json.loads(sys.argv[3])]
    remote = sorted(m for m in sys.modules if m.startswith("transformers_modules"))
    print("\\nRESULT " + json.dumps({"seconds": seconds, "ids": ids, "cls": type(tok).__name__, "remote": remote}))
    """
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny teacher, and its uniform (plain BERT) and non-uniform (metanas' own class) students."""
    root = tmp_path_factory.mktemp("tok")
    teacher = tiny_teacher_dir(root / "teacher")
    sn = metanas.ElasticBert.from_teacher(str(teacher))
    dirs = {
        name: metanas.export(sn, arch, root / name) for name, arch in (("uniform", UNIFORM), ("custom", NON_UNIFORM))
    }
    assert "auto_map" in json.loads((dirs["custom"] / "config.json").read_text())
    assert "auto_map" not in json.loads((dirs["uniform"] / "config.json").read_text())
    return teacher, dirs


def teacher_ids(teacher) -> tuple[str, list[list[int]]]:
    tok = transformers.AutoTokenizer.from_pretrained(str(teacher))
    return type(tok).__name__, [tok(t)["input_ids"] for t in TEXTS]


def load_in_fresh_process(model_dir, tmp_path, **kwargs) -> tuple[dict, str]:
    """`AutoTokenizer.from_pretrained(model_dir, **kwargs)` in a new process whose stdin is /dev/null."""
    script = tmp_path / "load_tokenizer.py"
    script.write_text(LOAD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    proc = subprocess.run(
        [sys.executable, str(script), str(model_dir), json.dumps(kwargs), json.dumps(TEXTS)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), output


def assert_loads_like_the_teacher(result: dict, output: str, teacher) -> None:
    assert not [m for m in PROMPT_MARKERS if m in output], output[-2000:]
    assert result["seconds"] < 3.0  # the prompt, when shown to a terminal, waits 15 s
    assert (result["cls"], result["ids"]) == teacher_ids(teacher)


@pytest.mark.slow
@pytest.mark.parametrize("student", ["uniform", "custom"])
def test_plain_autotokenizer_loads_the_student_tokenizer(exports, tmp_path, student):
    teacher, dirs = exports
    result, output = load_in_fresh_process(dirs[student], tmp_path)
    assert_loads_like_the_teacher(result, output, teacher)
    assert result["remote"] == [] and not (tmp_path / "hf_modules").exists()  # and the student's code never ran


@pytest.mark.slow
def test_custom_student_tokenizer_loads_without_running_its_code(exports, tmp_path):
    teacher, dirs = exports
    result, output = load_in_fresh_process(dirs["custom"], tmp_path, trust_remote_code=False)
    assert_loads_like_the_teacher(result, output, teacher)
    assert result["remote"] == [] and not (tmp_path / "hf_modules").exists()  # the student's code never ran


def test_bare_vocab_teacher_gives_a_student_tokenizer_that_names_its_class(exports, tmp_path):
    """A teacher folder with only vocab.txt: the custom student's config maps to no tokenizer, so its files must."""
    teacher, _ = exports
    bare = tmp_path / "bare_teacher"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        shutil.copy2(teacher / name, bare / name)
    sn = metanas.ElasticBert.from_teacher(str(bare))
    out = metanas.export(sn, NON_UNIFORM, tmp_path / "student")
    tok = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=False)
    assert (type(tok).__name__, [tok(t)["input_ids"] for t in TEXTS]) == teacher_ids(teacher)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and "name_or_path" not in config
