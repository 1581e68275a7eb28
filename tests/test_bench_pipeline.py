"""The benchmark harness: issue 7's targets and results.json from synthetic measurements (PASS and FAIL on both
sides of each limit), the start-up probe, and the pipeline measurements through the real dvc CLI on a tiny
profile (one dataset, one model): a from-scratch repro, no-op repros and a one-experiment queued sweep."""

import json
import math
from pathlib import Path

import pytest

from benchmarks import cluster_bench as cb
from benchmarks import parallel_capacity
from benchmarks import kernels
from benchmarks import pipeline_bench as pb
from benchmarks import run as bench

from conftest import ROOT, TINY_SIZES

# `dvc queue status` as printed by DVC 3.67, plus a failed and a running task.
QUEUE_STATUS = """\
Task     Name        Created    Status
837bc4f  vogie-abac  07:27 AM   Success
1076230  biped-snib  07:27 AM   Failed
315dd53  nervy-rams  07:29 AM   Running
f89f7ee  inane-rand  07:29 AM   Queued

Worker status: 1 active, 0 idle
"""


def tiny_profile(models: list[str], epochs: int = 2) -> dict:
    return pb.profile(pb.head_params(ROOT), ["sine"], models, epochs, {"sine": TINY_SIZES["sine"]})


def synthetic() -> dict:
    """Measurements in the shapes run.py produces, each figure placed on or just beyond its limit."""
    experiment = {"variant": "gru", "dataset": "sine",
                  "notebook": {"seconds": 3.0, "mse": 0.5, "runs": []},
                  "pipeline": {"seconds": 0.9, "mse": 0.5, "runs": []}}  # equal MSE passes
    worse = {**experiment, "pipeline": {"seconds": 0.1, "mse": 0.51, "runs": []}}
    commands = {name: {"modules": modules, "seconds": 0.3, "ratio": 0.2, "torch": False, "matplotlib": False,
                       "runs": [0.3]} for name, modules in pb.STARTUP_IMPORTS.items()}
    commands["train (learned)"] |= {"ratio": 1.2, "torch": True, "matplotlib": True}  # on the limit; matplotlib
    commands["report"] |= {"ratio": 1.25, "torch": True}  # too slow, and torch in a torch-free command
    return {
        "notebooks": {"seeds": [0, 1, 2], "experiments": {"good": experiment, "worse": worse},
                      "notebook_seconds": 6.0, "pipeline_seconds": 1.0, "training_ratio": 1 / 6},
        "kernels": {"steps": 5, "repeats": 1, "ratios": {"elman": 1.5, "concat": 1.51},
                    "kinds": {kind: {"seconds_per_update": 0.001} for kind in ("elman", "concat", kernels.TORCH_RNN)}},
        "rollout": {"experiment": "002 sine", "variant": "concat", "sequences": 1, "steps": 1000,
                    "batched_seconds": 0.1,
                    "as_written": {"window_seconds": 2.0, "speedup": 20.0, "max_abs_diff": 2e-4},
                    "fused": {"window_seconds": 1.5, "speedup": 15.0, "max_abs_diff": 2e-4}},
        "objective": {"dataset": "sine", "replicas": 5, "epochs": 5, "repeats": 1, "steps": [10],
                      "kinds": {"rnn": {"teacher_forced": 0.1, "10": 1.0, "ratio_10": 10.0},
                                "gru": {"teacher_forced": 0.1, "10": 1.05, "ratio_10": 10.5}}},
        "pipeline": {"full_repro": {"seconds": 600.0, "stages": 97, "pairs": 42, "seconds_per_pair": 600 / 42,
                                    "before_first_stage": 1.0, "groups": pb.by_group({"train@a-b": 2.0})},
                     "noop_repro": {"seconds": 3.0, "runs": [3.0]},
                     "startup": {"repeats": 1, "bare_torch_seconds": 1.5, "commands": commands}},
        "replicas": {"full_ratio": 1.5, "full_many_seconds": 300.0, "full_many_replicas": 5,
                     "full_one": {"seconds": 200.0},
                     "stages": {"replicas": 5, "stages": {"sine/gru": {"one": 4.0, "many": 10.0, "ratio": 2.5},
                                                          "sine/lstm": {"one": 3.0, "many": 7.6, "ratio": 7.6 / 3}}}},
        "sweeps": {"experiments": 4, "j1": {"experiments_per_minute": 2.0}, "j2": {"experiments_per_minute": 3.0},
                   "ratio": math.nan},
        "cluster": {"sweep": {"experiments": 4, "ratio": 1.7, "round_ratios": [1.6, 1.7, 1.8], "fanout_ratio": 1.9,
                              "whole_ratio": 0.99,
                              "capacity": 1.9,
                              "one": {"experiments_per_minute": 1.0}, "two": {"experiments_per_minute": 1.7},
                              "one_whole": {"experiments_per_minute": 1.72}},
                    "matrix": {"ratio": 0.99, "plain_seconds": 99.0, "seconds": 100.0, "waves": 5,
                               "waves_seconds": 90.0, "coordinator_seconds": 10.0}},
    }


# --- targets, results.json and the table ---------------------------------------------------------------------

def test_targets_pass_and_fail_on_both_sides_of_each_limit():
    rows = {r["target"]: r for r in bench.targets(synthetic())}
    passed = {target for target, r in rows.items() if r["passed"]}
    failed = set(rows) - passed
    assert passed == {
        "training time, pipeline / notebook loops (summed)",
        "test MSE good (gru), pipeline / notebook",
        "elman training step / nn.RNN",
        "batched rollout speed-up over seed 002's window-at-a-time loop",
        "no-op dvc repro, seconds",
        "start-up train (learned) / bare import torch",
        *(f"start-up {name} / bare import torch" for name in pb.STARTUP_IMPORTS if name not in
          ("train (learned)", "report")),
        *(f"{name} imports torch" for name in pb.TORCH_FREE if name != "report"),
        *(f"{name} imports matplotlib (draws nothing)" for name in pb.STARTUP_IMPORTS
          if name not in pb.PLOTTING and name != "train (learned)"),
        "full dvc repro, 5 replicas / 1",  # on the limit
        "train stage sine/gru, 5 replicas / 1",  # on the limit
        "full dvc repro of the default params, seconds",  # 600 s: on the limit
        "free-running epoch, 10 steps / teacher-forced epoch, sine/rnn",  # on the limit
        "Dask sweep throughput, 2 workers / 1, one core each (4 experiments)",  # on the limit
    }
    assert failed == {
        "test MSE worse (gru), pipeline / notebook",  # 0.51 > 0.5
        "concat training step / nn.RNN",  # 1.51 > 1.5
        "batched rollout max |difference|",  # 2e-4 > 1e-4
        "start-up report / bare import torch",  # 1.25 > 1.2
        "report imports torch",
        "train (learned) imports matplotlib (draws nothing)",
        "full dvc repro, seconds per (dataset, model) pair",  # 14.3 > 6
        "free-running epoch, 10 steps / teacher-forced epoch, sine/gru",  # 10.5 > 10
        "queued sweep throughput, -j 2 / -j 1",  # NaN never passes
        "train stage sine/lstm, 5 replicas / 1",  # 2.53 > 2.5
        "pipeline speed-up, plain dvc repro / pipeline repro --workers 2",  # 0.99 < 1
        "Dask sweep throughput, 2 workers / 1 worker on every core",  # 0.99 < 1
    }
    assert rows["training time, pipeline / notebook loops (summed)"]["measured"] == pytest.approx(1 / 6)
    assert rows["test MSE worse (gru), pipeline / notebook"]["measured"] == pytest.approx(0.51 / 0.5)


def test_only_measured_sections_get_rows():
    measured = synthetic()
    rows = bench.targets({"rollout": measured["rollout"]})
    assert [r["section"] for r in rows] == ["rollout", "rollout"]
    assert bench.targets({}) == []


def test_results_json_and_table():
    settings = {"quick": True, "repeats": 1, "seeds": [0, 1, 2], "sections": list(bench.SECTIONS)}
    env = bench.machine()
    assert env["cores"] >= 1 and env["torch"] and env["dvc"] and env["python"] and env["date"]
    results = json.loads(json.dumps(bench.assemble(synthetic(), settings, env)))  # NaN survives json
    assert set(results) == {"quick", "settings", "environment", "targets", "summary", "measurements"}
    assert results["quick"] is True and results["settings"] == settings
    assert set(results["measurements"]) == set(bench.SECTIONS)
    assert results["summary"] == {"passed": sum(r["passed"] for r in results["targets"]),
                                  "failed": sum(not r["passed"] for r in results["targets"])}
    assert results["summary"]["failed"] == 12
    assert all(set(r) == {"section", "target", "measured", "op", "limit", "passed", "detail"}
               for r in results["targets"])

    report = bench.format_report(results)
    rollout = report.split("Rollout:")[1].split("\n\n")[0].splitlines()[3:]  # one line per window loop
    assert [line.split("  ")[0] for line in rollout] == ["002 sine (concat)"] * 2
    assert "seed 002's forward" in rollout[0] and "torch fused kernel" in rollout[1] and "15" in rollout[1]
    table = report.split("Targets:")[1].splitlines()
    header, body = table[1], table[3:]
    assert len(body) == len(results["targets"])
    column = header.index("result")
    assert all(line[column:column + 4] in ("PASS", "FAIL") for line in body)  # aligned
    assert [line[column:column + 4] == "PASS" for line in body] == [r["passed"] for r in results["targets"]]


def test_main_writes_results_with_the_rollout_from_kernels(tmp_path, monkeypatch):
    calls = []

    def rollout_benchmark(root: Path, quick: bool, repeats: int) -> dict:
        calls.append((quick, repeats))
        assert (root / "data" / "datasets" / "sine.npz").is_file()  # the datasets are generated first
        return {"experiment": "002 sine", "variant": "concat", "sequences": 1, "steps": 100,
                "batched_seconds": 0.01, "as_written": {"window_seconds": 0.5, "speedup": 50.0, "max_abs_diff": 0.0},
                "fused": {"window_seconds": 0.2, "speedup": 20.0, "max_abs_diff": 0.0}}

    monkeypatch.setattr(kernels, "rollout_benchmark", rollout_benchmark)
    output = tmp_path / "results.json"
    bench.main(["--quick", "--only", "rollout", "--output", str(output)])
    assert calls == [(True, 2)]
    results = json.loads(output.read_text())
    assert results["quick"] is True and results["measurements"]["rollout"]["as_written"]["speedup"] == 50.0
    assert [r["passed"] for r in results["targets"]] == [True, True]


@pytest.mark.parametrize("argv", [["--only", "notebooks,gpu"], ["--seeds", "0,x"], ["--repeats", "0"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


# --- start-up ------------------------------------------------------------------------------------------------

def test_startup_times_each_import_and_sees_what_it_loads():
    result = pb.startup(1, imports={"nn": ["torch.nn"], "plain": ["json"], "plots": ["matplotlib"]})
    commands = result["commands"]
    assert result["bare_torch_seconds"] > 0
    assert (commands["nn"]["torch"], commands["nn"]["matplotlib"]) == (True, False)
    assert (commands["plain"]["torch"], commands["plain"]["matplotlib"]) == (False, False)
    assert commands["plots"]["matplotlib"] is True
    assert commands["plain"]["ratio"] < 0.8  # json loads far faster than torch
    assert commands["nn"]["ratio"] == pytest.approx(commands["nn"]["seconds"] / result["bare_torch_seconds"])


def test_startup_raises_on_a_module_that_does_not_import():
    with pytest.raises(RuntimeError, match="no_such_module"):
        pb.startup(1, imports={"broken": ["no_such_module"]})


# --- repro and queue parsing ---------------------------------------------------------------------------------

def test_stage_seconds_and_groups_from_timestamped_lines():
    lines = [(0.5, "Running stage 'generate@sine':"), (0.6, "> python -m pipeline generate sine"),
             (2.0, "Running stage 'train@sine-gru':"), (5.0, "Running stage 'report':")]
    per_stage = pb.stage_seconds(lines, wall=6.0)
    assert per_stage == pytest.approx({"generate@sine": 1.5, "train@sine-gru": 3.0, "report": 1.0})
    groups = pb.by_group(per_stage)
    assert list(groups) == list(pb.STAGE_GROUPS)
    assert groups["train"] == {"stages": 1, "seconds": pytest.approx(3.0)}
    assert groups["evaluate"] == {"stages": 0, "seconds": 0.0}


def test_require_noop():
    pb.require_noop("Stage 'report' didn't change, skipping\nData and pipelines are up to date.\n")
    with pytest.raises(RuntimeError, match="report"):
        pb.require_noop("Running stage 'report':\n> python -m pipeline report\n")
    with pytest.raises(RuntimeError, match="up to date"):
        pb.require_noop("")


def test_queue_status_is_parsed():
    states = pb.parse_queue_status(QUEUE_STATUS)
    assert states == {"vogie-abac": "Success", "biped-snib": "Failed", "nervy-rams": "Running",
                      "inane-rand": "Queued"}
    assert pb.unfinished(states, ["vogie-abac"]) == {}
    assert pb.unfinished(states, ["vogie-abac", "biped-snib", "gone"]) == {"biped-snib": "Failed", "gone": None}


# --- the cluster benchmark's reading of its commands' output ----------------------------------------------------

def test_a_sweep_is_split_into_its_fan_out_and_the_fixed_part():
    lines = [(0.5, "wave 0: the shared stages (generate@sine) on 2 local workers, pushed with their run-cache"),
             (4.0, "2 experiments on 2 local workers, 1 thread each"), (30.0, "sweep-hidden7: done (log x)"),
             (34.0, "sweep-hidden8: done (log y)"), (40.0, "| Experiment | ... |")]
    figures = cb.sweep_figures(41.0, lines, ["sweep-hidden7", "sweep-hidden8"])
    assert figures == {"experiments": 2, "threads": 1, "seconds": 41.0, "fanout_seconds": 30.0,
                       "fixed_seconds": 11.0, "experiments_per_minute": 60 * 2 / 41.0,
                       "fanout_experiments_per_minute": 4.0}
    failed = lines[:2] + [(30.0, "sweep-hidden7: FAILED, dvc exp run failed (log x); its last lines:")] + lines[3:]
    with pytest.raises(RuntimeError, match=r"missing: \['sweep-hidden7'\]"):
        cb.sweep_figures(41.0, failed, ["sweep-hidden7", "sweep-hidden8"])
    with pytest.raises(RuntimeError, match="never fanned out"):
        cb.sweep_figures(41.0, lines[:1] + lines[2:], ["sweep-hidden7"])


def test_a_sweep_side_is_the_median_of_its_runs():
    runs = [{"workers": 1, "threads": 1, "experiments": 4, "seconds": s, "fanout_seconds": f, "fixed_seconds": s - f}
            for s, f in [(200.0, 170.0), (240.0, 200.0), (210.0, 190.0)]]
    side = cb.median_sweep(runs)
    assert (side["seconds"], side["fanout_seconds"], side["fixed_seconds"]) == (210.0, 190.0, 30.0)
    assert side["experiments_per_minute"] == pytest.approx(60 * 4 / 210.0)
    assert side["runs"] == runs and (side["workers"], side["threads"]) == (1, 1)


def test_a_speed_up_is_the_median_of_its_rounds_ratios():
    """Round 2 fell into a slow spell for the 1-worker side only: the per-round ratios keep it to one round, where
    the ratio of the sides' medians (200 s / 100 s = 2.0) would pair rounds that ran minutes apart."""
    slow = [{"seconds": s} for s in (150.0, 240.0, 200.0)]
    fast = [{"seconds": s} for s in (90.0, 100.0, 125.0)]
    paired = cb.paired_ratio(slow, fast)
    assert paired["rounds"] == pytest.approx([150 / 90, 2.4, 1.6])
    assert paired["ratio"] == pytest.approx(150 / 90)
    with pytest.raises(ValueError, match="paired runs needed, got 3 and 2"):
        cb.paired_ratio(slow, fast[:2])


def test_a_matrix_repro_counts_only_when_its_coordinator_ran_nothing():
    lines = [(0.2, "6 stages in 4 waves on 2 local workers, 1 thread each"), (0.3, "wave 1: generate@sine"),
             (50.0, "coordinator: dvc repro --pull (restores every output from the run-cache, writes dvc.lock)"),
             (58.0, "coordinator: ran no stage; dvc.lock written")]
    assert cb.matrix_figures(60.0, lines) == {"stages": 6, "waves": 4, "threads": 1, "seconds": 60.0,
                                              "waves_seconds": 50.0, "coordinator_seconds": 10.0}
    retrained = lines[:3] + [(58.0, "coordinator: ran train@sine-gru; dvc.lock written")]
    with pytest.raises(RuntimeError, match="ran no stage"):
        cb.matrix_figures(60.0, retrained)


# --- through the real dvc CLI --------------------------------------------------------------------------------

@pytest.mark.slow
def test_full_repro_then_noop_on_a_tiny_profile(tmp_path):
    full = pb.full_repro(ROOT, tmp_path / "repro", tiny_profile(["persistence"]))
    assert (full["stages"], full["pairs"]) == (5, 1)
    assert full["seconds_per_pair"] == full["seconds"] > 0
    assert {group: g["stages"] for group, g in full["groups"].items()} == dict.fromkeys(pb.STAGE_GROUPS, 1)
    assert sum(full["stage_seconds"].values()) + full["before_first_stage"] == pytest.approx(full["seconds"])
    assert (Path(full["repo"]) / ".dvc" / "cache").is_dir()  # its own cache, now filled
    noop = pb.noop_repro(Path(full["repo"]), 1)
    assert noop["seconds"] > 0 and len(noop["runs"]) == 1


@pytest.mark.slow
def test_a_one_experiment_sweep_succeeds(tmp_path):
    # persistence keeps it short (no torch), and its train stage still reruns: it declares the `model` params.
    profile = tiny_profile(["persistence"])
    result = pb.sweep(ROOT, tmp_path / "sweep", jobs=1, n=1, profile=profile)
    assert result["experiments"] == 1 and len(result["names"]) == 1
    assert result["hidden"] == [profile["model"]["hidden"] + 1]  # not the baseline's: no run-cache hit
    assert result["experiments_per_minute"] == pytest.approx(60 / result["seconds"])
    assert pb.parse_queue_status(pb.run(Path(result["repo"]), "dvc", "queue", "status")) == \
        {result["names"][0]: "Success"}


# --- the machine's parallel capacity ---------------------------------------------------------------------------

def test_parallel_capacity_is_cores_times_alone_over_together_in_medians(monkeypatch):
    """The arithmetic and the alternation, on made-up timings: the probe itself is a timing, so it runs in the
    benchmark only (a timed assertion here would fail on a busy machine)."""
    calls = []
    timings = iter([[1.0], [1.4, 1.6], [3.0], [1.6, 1.6], [1.2], [1.5, 1.5]])

    def fake_round(cores, loops):
        calls.append((list(cores), loops))
        return next(timings)

    monkeypatch.setattr(parallel_capacity, "_round", fake_round)
    result = parallel_capacity.measure(loops=7, repeats=3, cores=[0, 1])
    assert calls == [([0], 7), ([0, 1], 7)] * 3  # alone, then together, in every repeat
    # alone: median of 1.0, 3.0, 1.2 = 1.2; together: median of the per-round medians 1.5, 1.6, 1.5 = 1.5
    assert {key: result[key] for key in ("cores", "loops", "alone_seconds", "together_seconds")} == {
        "cores": 2, "loops": 7, "alone_seconds": 1.2, "together_seconds": 1.5}
    assert result["capacity"] == pytest.approx(2 * 1.2 / 1.5)


def test_a_capacity_round_times_one_pinned_process_per_core():
    seconds = parallel_capacity._round([0, 0], 10_000)  # two processes, both pinned to core 0, started together
    assert len(seconds) == 2 and all(0 < t < 60 for t in seconds)
