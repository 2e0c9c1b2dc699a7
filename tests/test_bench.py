"""Tests of `metanas bench`: the table file, the protocol, and replaying strategies on a complete tiny table."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest
from synthetic import MINILM, synthetic_loss

from metanas.bench.protocol import BenchTarget, best_so_far, evals_to
from metanas.bench.replay import replay_run, sized_options, summarize
from metanas.bench.run import run_bench
from metanas.bench.tablefile import BenchTask, OutOfTableError, load_bench_table, write_bench_table
from metanas.cli import main
from metanas.space import ArchConfig, SearchSpace

SEQ_LEN = 32


def tiny_space() -> SearchSpace:
    return SearchSpace.from_teacher_config(
        MINILM, depth_choices=(1, 2, 3), hidden_choices=(192, 384), head_choices=(6, 12), ffn_choices=(384, 768, 1536)
    )


def every_arch(space: SearchSpace) -> list[ArchConfig]:
    """The whole space (516 archs): a complete table, as NAS-Bench-201's."""
    layer = list(itertools.product(space.head_choices, space.ffn_choices))
    out = []
    for depth in space.depth_choices:
        for hidden in space.hidden_choices:
            for layers in itertools.product(layer, repeat=depth):
                out.append(ArchConfig(depth, hidden, tuple(h for h, _ in layers), tuple(f for _, f in layers)))
    return out


def tiny_task(name: str = "synthetic", shift: float = 0.0) -> BenchTask:
    space = tiny_space()
    info = {
        "task": name,
        "family": "kd",
        "metric_name": "synthetic_loss",
        "task_meta": {"objective": "kd", "higher_is_better": False, "seq_len": SEQ_LEN, "corpus_size": 100},
        "space": space.to_dict(),
    }
    rows = {a: (-(synthetic_loss(a) + shift), synthetic_loss(a) + shift) for a in every_arch(space)}
    return BenchTask(name, info, rows)


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    return write_bench_table(tmp_path / "bench.jsonl.gz", [tiny_task(), tiny_task("shifted", 1.0)], "test")


def test_table_file_round_trips_is_reproducible_and_refuses_damage(table_file: Path, tmp_path: Path) -> None:
    tasks = load_bench_table(table_file)
    assert sorted(tasks) == ["shifted", "synthetic"] and len(tasks["synthetic"].rows) == 516
    arch = tiny_space().largest()
    assert tasks["synthetic"].fitness(arch) == -synthetic_loss(arch)
    assert tasks["shifted"].fitness(arch) == pytest.approx(-synthetic_loss(arch) - 1.0)
    again = write_bench_table(tmp_path / "again.jsonl.gz", [tiny_task("shifted", 1.0), tiny_task()], "test")
    assert again.read_bytes() == table_file.read_bytes()  # task and row order do not matter
    lines = gzip.decompress(table_file.read_bytes()).decode().splitlines()
    edited = json.loads(lines[5])
    edited["fitness"] += 0.5
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([*lines[:5], json.dumps(edited), *lines[6:]]) + "\n")
    with pytest.raises(ValueError, match="rows of task 'shifted' do not match"):
        load_bench_table(damaged)
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(ValueError, match="truncated or was edited"):
        load_bench_table(truncated)
    header = json.loads(lines[0])
    newer = tmp_path / "newer.jsonl"
    newer.write_text("\n".join([json.dumps({**header, "schema": 99}), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="schema 99; this metanas reads schema 1"):
        load_bench_table(newer)
    with pytest.raises(ValueError, match="not a metanas benchmark table"):
        load_bench_table(_plain(tmp_path))


def _plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.jsonl"
    path.write_text('{"arch": {}}\n')
    return path


def test_a_miss_names_the_task_and_how_to_evaluate_it() -> None:
    task = tiny_task()
    missing = ArchConfig(2, 192, (6, 12), (384, 384))
    del task.rows[missing]
    with pytest.raises(OutOfTableError, match=r"not in the table of task 'synthetic' \(515 archs\).*--live"):
        task.fitness(missing)


def test_targets_and_best_so_far_are_what_they_say() -> None:
    trace = [0.1, 0.5, 0.3, 0.9, 0.2]
    assert best_so_far(trace, 7).tolist() == [0.1, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9]
    assert evals_to(trace, 0.5, 7) == 2 and evals_to(trace, 0.9, 7) == 4 and evals_to(trace, 0.95, 7) == 8
    target = BenchTarget.from_quantile("synthetic", tiny_space(), 0.5, SEQ_LEN)
    reference = target.reference(60)
    assert len(set(reference)) == 60 and all(target.feasible(a) for a in reference)
    again = BenchTarget.from_quantile("synthetic", tiny_space(), 0.5, SEQ_LEN)
    assert reference == again.reference(60)  # fixed by the space and budget


def test_replay_is_feasible_deterministic_and_summarized(table_file: Path) -> None:
    task = load_bench_table(table_file)["synthetic"]
    target = BenchTarget.from_quantile("synthetic", task.space, 0.5, SEQ_LEN)
    assert sized_options("evolution", 256) == {
        "population_size": 25,
        "generations": 10,
        "parents": 5,
        "repair": True,
    }
    assert sized_options("random", 64) == {"num_samples": 64}
    for name in ("random", "evolution", "aging", "nsga2"):
        runs = [replay_run(target, task.fitness, name, seed, 40) for seed in range(3)]
        assert runs[0]["trace"] == replay_run(target, task.fitness, name, 0, 40)["trace"]
        assert all(len(r["trace"]) == 40 for r in runs) and runs[0]["trace"] != runs[1]["trace"]
        ref = {"f_min": -60.0, "f_ref": max(max(r["trace"]) for r in runs), "n": 1}
        summary = summarize(runs, ref, 40)
        assert summary["evals_to_1"]["success"] >= 1 / 3  # the best run reaches the reference best
        assert summary["evals_to_0.98"]["per_seed"] == [
            evals_to(r["trace"], -60.0 + 0.98 * (ref["f_ref"] + 60.0), 40) for r in runs
        ]


def test_a_live_lookup_fills_what_the_table_lacks() -> None:
    task = tiny_task()
    target = BenchTarget.from_quantile("synthetic", task.space, 0.5, SEQ_LEN)
    kept = dict(list(task.rows.items())[:100])
    partial = BenchTask("synthetic", task.info, kept)
    with pytest.raises(OutOfTableError):
        replay_run(target, partial.fitness, "random", 0, 50)
    misses: list[ArchConfig] = []

    def live(arch: ArchConfig) -> float:
        if arch not in partial.rows:
            misses.append(arch)
            partial.rows[arch] = (-synthetic_loss(arch), synthetic_loss(arch))
        return partial.fitness(arch)

    run = replay_run(target, live, "random", 0, 50)
    assert run["trace"] == replay_run(target, task.fitness, "random", 0, 50)["trace"] and misses


def test_bench_command_replays_and_reports_per_task_and_overall(table_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "result.json"
    argv = ["bench", "replay", str(table_file), "--strategies", "random,evolution", "--seeds", "3", "--evals", "40"]
    assert main([*argv, "--reference", "50", "--budget", "0.5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| random |" in printed and "| evolution |" in printed and "2 tasks x 3 seeds" in printed
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"shifted", "synthetic"} and set(result["overall"]) == {"random", "evolution"}
    per_task = [result["tasks"][t]["strategies"]["random"]["evals_to_0.98"]["median"] for t in ("shifted", "synthetic")]
    assert result["overall"]["random"]["median_evals_to_0.98"] == pytest.approx(sum(per_task) / 2)
    # A shift of every fitness leaves every trace's ranks, hence every hit, unchanged.
    assert per_task[0] == per_task[1]
    assert main(["bench", "info", str(table_file)]) == 0
    assert "synthetic: 516 archs, synthetic_loss" in capsys.readouterr().out


def test_bench_errors_name_the_valid_choices(table_file: Path) -> None:
    with pytest.raises(ValueError, match="unknown search strategy 'evo'; valid strategies: random, evolution"):
        run_bench(table_file, None, ["evo"])
    with pytest.raises(ValueError, match="unknown task 'nope'; tasks in the table: shifted, synthetic"):
        run_bench(table_file, ["nope"], ["random"])
    with pytest.raises(ValueError, match="does not exist"):
        run_bench(table_file.with_name("missing.gz"), None, ["random"])


def test_a_strategy_that_needs_the_supernet_says_so_on_a_table(table_file: Path) -> None:
    with pytest.raises(ValueError, match="'differentiable' optimises on the supernet itself.*--live"):
        run_bench(table_file, ["synthetic"], ["differentiable"], seeds=1, evals=10, budget_quantile=0.5, reference=20)


def test_parallel_replays_give_the_serial_results(table_file: Path) -> None:
    """Two spawned workers replay the same traces as this process, summaries included; wall times aside."""
    strategies = ["random", "tpe", "bo"]
    options = {"bo": {"surrogate": "target", "pool_size": 100, "target_epochs": 20}}
    kw = {"seeds": 2, "evals": 30, "budget_quantile": 0.5, "reference": 50, "options": options}
    serial = run_bench(table_file, ["synthetic"], strategies, **kw)["tasks"]["synthetic"]
    parallel = run_bench(table_file, ["synthetic"], strategies, jobs=2, **kw)["tasks"]["synthetic"]
    for name in strategies:
        runs = [[(r["seed"], r["trace"]) for r in result["runs"][name]] for result in (serial, parallel)]
        assert runs[0] == runs[1] and [seed for seed, _ in runs[0]] == [0, 1]
        assert len(runs[0][0][1]) == 30 and runs[0][0][1] != runs[0][1][1]
        for key in ("evals_to_0.98", "final_best"):
            assert serial["strategies"][name][key] == parallel["strategies"][name][key]


def test_parallel_replay_options_are_checked(table_file: Path) -> None:
    with pytest.raises(ValueError, match="jobs must be an integer >= 1, got 0"):
        run_bench(table_file, None, ["random"], jobs=0)
    with pytest.raises(ValueError, match="jobs=2 replays on the table alone.*--live and jobs 1"):
        run_bench(table_file, None, ["random"], jobs=2, live=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'differentiable' optimises on the supernet itself"):
        run_bench(table_file, ["synthetic"], ["differentiable"], 1, 10, 0.5, 20, jobs=2)
