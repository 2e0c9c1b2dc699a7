"""Recipe schema: defaults, validation messages, overrides, YAML round trip (no model needed)."""

from __future__ import annotations

import pytest
import yaml

from metanas.config import Recipe, apply_override, load_recipe

BASE = {"teacher": {"path": "some/teacher"}}


def recipe(**sections) -> Recipe:
    return Recipe.from_dict({**BASE, **sections})


def test_defaults_fill_every_section():
    r = recipe()
    assert r.teacher.rewire is True
    assert r.data.source == "builtin" and r.data.max_length == 128
    assert r.objective.name == "kd" and r.objective.options == {}
    assert r.training.sampling == "sandwich" and r.training.num_random == 2
    assert r.training.schedule == "linear" and r.training.grad_accum == 1
    assert r.logging.wandb is True and r.logging.project == "metanas"
    assert r.space == {} and r.run_dir is None
    assert Recipe.from_dict({}).teacher.path is None  # the embedded MiniLM


def test_types_are_coerced_where_safe():
    r = recipe(training={"lr": "1e-4", "weight_decay": 0, "steps": 5})
    assert r.training.lr == pytest.approx(1e-4) and isinstance(r.training.weight_decay, float)
    assert r.training.steps == 5


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trainig": {}}, "unknown key 'trainig' (did you mean 'training'?)"),
        ({"training": {"stesp": 3}}, "unknown key 'training.stesp' (did you mean 'training.steps'?)"),
        ({"data": {"max_lenght": 64}}, "unknown key 'data.max_lenght' (did you mean 'data.max_length'?)"),
        ({"logging": {"wandbb": False}}, "unknown key 'logging.wandbb' (did you mean 'logging.wandb'?)"),
        ({"space": {"depth_choice": [1]}}, "unknown key 'depth_choice' (did you mean 'space.depth_choices'?)"),
    ],
)
def test_unknown_keys_name_the_full_key_and_suggest_the_nearest(raw, message):
    with pytest.raises(ValueError) as e:
        recipe(**raw)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"training": {"steps": 0}}, "training.steps must be > 0, got 0"),
        ({"training": {"lr": -1}}, "training.lr must be > 0, got -1.0"),
        ({"training": {"warmup_ratio": 1}}, "training.warmup_ratio must be in [0, 1), got 1.0"),
        ({"training": {"schedule": "step"}}, "training.schedule must be one of linear, cosine, constant; got 'step'"),
        ({"training": {"sampling": "random"}}, "training.sampling must be one of sandwich, uniform"),
        ({"training": {"steps": "many"}}, "training.steps must be an integer, got 'many'"),
        ({"training": {"bf16": "yes"}}, "training.bf16 must be a boolean"),
        ({"training": {"grad_accum": 0}}, "training.grad_accum must be >= 1, got 0"),
        ({"objective": {"name": "distill"}}, "objective.name must be one of contrastive, kd, mlm, task; got 'distill'"),
        ({"logging": {"tags": "a"}}, "logging.tags must be a list"),
        ({"data": {"max_length": 1}}, "data: DataConfig.max_length must be an integer >= 2"),
        ({"teacher": {"path": " "}}, "teacher.path must be a directory or hub id"),
        ({"training": 3}, "training must be a mapping"),
        ({"export": {"distill_seconds": 0}}, "export.distill_seconds must be > 0, got 0"),
        ({"export": {"distill_seconds": 60}}, "export.distill_seconds needs export.distill_steps > 0"),
    ],
)
def test_bad_values_name_the_field_and_allowed_values(raw, message):
    with pytest.raises(ValueError) as e:
        recipe(**raw)
    assert message in str(e.value)


def test_overrides_apply_before_validation_and_parse_yaml():
    r = Recipe.from_dict(
        BASE,
        ["training.steps=7", "training.bf16=true", "objective.options.relation_heads=2", "space.depth_choices=[1, 2]"],
    )
    assert r.training.steps == 7 and r.training.bf16 is True
    assert r.objective.options == {"relation_heads": 2}
    assert r.space == {"depth_choices": [1, 2]}
    with pytest.raises(ValueError, match="unknown key 'training.step' \\(did you mean 'training.steps'\\?\\)"):
        Recipe.from_dict(BASE, ["training.step=7"])
    with pytest.raises(ValueError, match="must look like key.sub=value"):
        Recipe.from_dict(BASE, ["training.steps"])
    with pytest.raises(ValueError, match="training.steps is not a section"):
        Recipe.from_dict({**BASE, "training": {"steps": 3}}, ["training.steps.x=1"])


def test_overrides_do_not_touch_the_callers_dict():
    raw = {"teacher": {"path": "t"}, "training": {"steps": 3}}
    Recipe.from_dict(raw, ["training.steps=9"])
    assert raw["training"]["steps"] == 3
    nested: dict = {}
    apply_override(nested, "a.b.c=[1, 2]")
    assert nested == {"a": {"b": {"c": [1, 2]}}}


def test_load_recipe_round_trips_through_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "training": {"steps": 12, "lr": 0.001}, "logging": {"tags": ["x"]}}),
        encoding="utf-8",
    )
    r = load_recipe(path, ["training.seed=3"])
    assert r.training.steps == 12 and r.training.seed == 3 and r.logging.tags == ["x"]
    again = tmp_path / "again.yaml"
    again.write_text(r.to_yaml(), encoding="utf-8")
    assert load_recipe(again).to_dict() == r.to_dict()


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a mapping of sections, got list"):
        load_recipe(listing)
