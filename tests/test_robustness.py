"""Bad params, bad data files, corrupt artifacts, interrupted stages and absent devices, through the real CLI.

The standard for each: one `Error:` line naming the key or file and the fix, a non-zero exit, no traceback, and
no output file created or changed. (The pipeline-level cases, under `dvc repro`, are in test_recovery.py.)
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import default_sigint, source_env, tiny_params, use_datasets, write_params
from pipeline.files import artifacts
from pipeline.cli import cli
from test_cli import assert_one_line_error, invoke

GOOD_CSV = "t,value\n" + "".join(f"{i},{i * 0.5}\n" for i in range(200))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the project and its bytes: "nothing created or changed" is equality of two snapshots."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def trained(project) -> Path:
    """The tiny project with the sine generated and its gru trained: outputs exist that an error must not touch."""
    for command in (["generate", "sine"], ["train", "sine", "gru"]):
        result = invoke(*command)
        assert result.exit_code == 0, result.output
    return project


# --- 1. bad params --------------------------------------------------------------------------------------------

BAD_PARAMS = {
    "wrong-type": (lambda r: r["model"].update(hidden="big"),
                   "params.yaml: model.hidden must be an integer, got 'big'"),
    "negative-size": (lambda r: r["model"].update(hidden=-1), "params.yaml: model.hidden must be >= 1, got -1"),
    "zero-size": (lambda r: r["train"].update(batch_size=0), "params.yaml: train.batch_size must be >= 1, got 0"),
    "window-longer-than-series": (
        lambda r: r["data"]["sine"].update(window=100000),
        "params.yaml: data.sine.window must leave at least 2 training windows in 200 points (train_until / dt), "
        "got 100000"),
    "dataset-without-data-entry": (
        lambda r: r["datasets"].append("weather"),
        "params.yaml: datasets lists 'weather' but there is no data.weather entry; add one or choose from: "
        "adding, lorenz, mackey_glass, memory_long, memory_short, ramp, sincos, sine, stores, trajectory, trending"),
    "unknown-model": (
        lambda r: r["models"].update(transformer={}),
        "params.yaml: models.transformer is not a known model; choose from: concat, elman, gru, linear, lstm, "
        "mean, persistence, rnn (or give the entry a `kind:`), got 'transformer'"),
    "unknown-model-kind": (
        lambda r: r["models"]["gru"].update(kind="grux"),
        "params.yaml: models.gru.kind is not a known model; choose from: concat, elman, gru, linear, lstm, "
        "mean, persistence, rnn (or give the entry a `kind:`), got 'grux'"),
    "unknown-data-kind": (
        lambda r: r["data"]["sine"].update(kind="cosine"),
        "params.yaml: data.sine.kind must be one of: adding, csv, lorenz, mackey_glass, memory, ramp, sincos, sine, trajectory; got 'cosine'"),
    "unknown-device": (lambda r: r.update(device="tpu"),
                       "params.yaml: device must be auto, cpu, cuda, cuda:N or mps; got 'tpu'"),
    "missing-section": (lambda r: r.pop("train"),
                        "params.yaml: missing key 'train'; add it (the README lists every setting)"),
    "extra-key": (lambda r: r["model"].update(hiden=3),
                  "params.yaml: unknown key 'model.hiden'; expected one of: forget_bias, hidden, layers"),
    "lr-not-a-number": (lambda r: r["train"].update(lr="1e-3x"), "params.yaml: train.lr must be a number, "
                                                                 "got '1e-3x'"),
}


@pytest.mark.parametrize("command", [["generate", "sine"], ["train", "sine", "gru"], ["evaluate", "sine", "gru"],
                                     ["compare", "sine"], ["report"]], ids=lambda c: c[0])
@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_params_are_one_line_and_touch_nothing(trained, case, command):
    change, expected = BAD_PARAMS[case]
    raw = tiny_params()
    change(raw)
    write_params(trained, raw)
    before = snapshot(trained)
    assert assert_one_line_error(invoke(*command)) == f"Error: {expected}"
    assert snapshot(trained) == before


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_check_reports_the_same_line_before_any_stage_runs(trained, case):
    """`make repro` runs `check` first: under `dvc repro` the failing stage's old outputs are already deleted."""
    change, expected = BAD_PARAMS[case]
    raw = tiny_params()
    change(raw)
    write_params(trained, raw)
    before = snapshot(trained)
    assert assert_one_line_error(invoke("check")) == f"Error: {expected}"
    assert snapshot(trained) == before


def test_check_names_a_device_this_machine_lacks(trained):
    """`check` (before `dvc repro` in `make repro`) stops on an absent device, not the first train stage."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    raw = tiny_params()
    raw["device"] = "cuda"
    write_params(trained, raw)
    assert assert_one_line_error(invoke("check")) == ("Error: params.yaml: device is 'cuda' but CUDA is not available "
                                                      "on this machine; set device: auto or device: cpu")


def test_check_accepts_good_params(project):
    result = invoke("check")
    assert result.exit_code == 0, result.output
    assert result.output == "params.yaml: OK (9 datasets, 9 models, 72 pairs, device cpu)\n"


# --- 2. bad data files ----------------------------------------------------------------------------------------

BAD_CSV = {
    "missing-file": (None, "data/raw/s.csv does not exist; put your CSV file there or fix data.mine.path"),
    "missing-column": (GOOD_CSV.replace("value", "price"),
                       "data/raw/s.csv has no column 'value' (data.mine.column); columns are: t, price"),
    "empty-cell": (GOOD_CSV.replace("\n7,3.5\n", "\n7,\n"),
                   "data/raw/s.csv: column 'value' has 1 missing cell(s), first on line 9; fill those cells, "
                   "or set data.mine.missing to interpolate, ffill or drop"),
    "text-in-numeric-column": (GOOD_CSV.replace("\n7,3.5\n", "\n7,abc\n"),
                               "data/raw/s.csv: column 'value' has a non-numeric value 'abc' on line 9"),
    "too-short": ("t,value\n" + "".join(f"{i},{i}\n" for i in range(5)),
                  "data/raw/s.csv: column 'value' has 5 values, too few for window 5 with these fractions (train "
                  "part 5 needs >= 7, val 0 and test 0 need >= 1); use a longer series or a smaller "
                  "data.mine.window"),
    "not-csv": ("\x89PNG\r\n\x1a\n\x00\x00binary",
                "data/raw/s.csv cannot be read as CSV: 'utf-8' codec can't decode byte 0x89 in position 0: "
                "invalid start byte"),
}


LONG_CSV = "shop,t,value\n" + "".join(f"{s},{i},{i * 0.5}\n" for s in "ab" for i in range(60))
# Many series in one long-format file: (content, settings beside kind and path, the line expected)
BAD_LONG_CSV = {
    "absent-id-column": (LONG_CSV, {"id_column": "store"},
                         "data/raw/s.csv has no column 'store' (data.mine.id_column); columns are: shop, t, value"),
    "repeated-time": (LONG_CSV + "b,59,1.0\n", {"id_column": "shop", "time_column": "t"},
                      "data/raw/s.csv: time '59' in series 'b' appears twice (lines 121 and 122); each time must "
                      "appear once per series"),
    "series-too-short": (LONG_CSV + "".join(f"c,{i},{i}\n" for i in range(8)), {"id_column": "shop"},
                         "data/raw/s.csv: series 'c' has 8 values, too few for window 5 with these fractions "
                         "(train part 6 needs >= 7, val 1 and test 1 need >= 1); use a longer series or a smaller "
                         "data.mine.window"),
}


@pytest.mark.parametrize("case", list(BAD_LONG_CSV))
def test_bad_long_format_csv_is_one_line_and_writes_nothing(trained, case):
    content, settings, expected = BAD_LONG_CSV[case]
    (trained / "data" / "raw" / "s.csv").write_text(content)
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": "data/raw/s.csv", "column": "value", "window": 5, **settings}
    raw["datasets"].append("mine")
    write_params(trained, raw)
    before = snapshot(trained)
    assert assert_one_line_error(invoke("generate", "mine")) == f"Error: {expected}"
    assert snapshot(trained) == before


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_is_one_line_and_writes_nothing(trained, case):
    content, expected = BAD_CSV[case]
    if content is not None:
        (trained / "data" / "raw" / "s.csv").write_bytes(content.encode("latin-1"))
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": "data/raw/s.csv", "column": "value", "window": 5}
    raw["datasets"].append("mine")
    write_params(trained, raw)
    before = snapshot(trained)
    assert assert_one_line_error(invoke("generate", "mine")) == f"Error: {expected}"
    assert snapshot(trained) == before


def test_the_good_csv_of_these_cases_generates(trained):
    (trained / "data" / "raw" / "s.csv").write_text(GOOD_CSV)
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": "data/raw/s.csv", "column": "value", "window": 5}
    raw["datasets"].append("mine")
    write_params(trained, raw)
    result = invoke("generate", "mine")
    assert result.exit_code == 0, result.output


# --- 3. corrupt artifacts -------------------------------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"not an archive at all\n" * 20)


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [truncate, garbage, empty], ids=lambda f: f.__name__)
@pytest.mark.parametrize("artifact, command", [
    ("data/datasets/sine.npz", ["train", "sine", "gru"]),
    ("data/datasets/sine.npz", ["evaluate", "sine", "gru"]),
    ("data/models/sine/gru.npz", ["evaluate", "sine", "gru"]),
], ids=["dataset-train", "dataset-evaluate", "checkpoint-evaluate"])
def test_corrupt_artifact_names_the_file_and_says_rerun(trained, artifact, command, damage):
    damage(trained / artifact)
    before = snapshot(trained)
    line = assert_one_line_error(invoke(*command))
    assert line.startswith(f"Error: {artifact} is corrupt")
    assert line.endswith("delete it and run `dvc repro`")
    assert snapshot(trained) == before


@pytest.mark.parametrize("damage", [truncate, garbage, empty, Path.unlink], ids=lambda f: f.__name__)
def test_compare_checks_every_pair_before_it_draws_anything(trained, damage):
    raw = tiny_params()
    raw["models"] = {"persistence": {}, "gru": {}}
    write_params(trained, raw)
    for command in (["train", "sine", "persistence"], ["evaluate", "sine", "persistence"],
                    ["evaluate", "sine", "gru"]):
        assert invoke(*command).exit_code == 0
    artifact = "data/predictions/sine/gru.npz"  # the last pair: a compare that drew as it read would have begun
    damage(trained / artifact)
    before = snapshot(trained)
    line = assert_one_line_error(invoke("compare", "sine"))
    if damage is Path.unlink:
        assert line == f"Error: {artifact} does not exist; run `dvc repro` to produce it"
    else:
        assert line.startswith(f"Error: {artifact} is corrupt") and line.endswith("delete it and run `dvc repro`")
    assert snapshot(trained) == before


class Payload:
    """Unpickling this would run code: a loader that uses pickle would create the marker file."""

    def __reduce__(self):
        return (Path("pickle-ran").touch, ())


def test_checkpoint_with_a_pickled_object_is_refused_not_run(trained):
    path = trained / "data" / "models" / "sine" / "gru.npz"
    with np.load(path) as original:
        arrays = dict(original)
    arrays["rnn.weight_hh_l0"] = np.array([Payload()], dtype=object)  # unpickled only with allow_pickle
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    line = assert_one_line_error(invoke("evaluate", "sine", "gru"))
    assert line.startswith("Error: data/models/sine/gru.npz is corrupt")
    assert not (trained / "pickle-ran").exists()


def test_dataset_with_a_pickled_array_is_refused_not_run(trained):
    path = trained / "data" / "datasets" / "sine.npz"
    with np.load(path) as original:
        arrays = dict(original)
    arrays["x_train"] = np.array([Payload()], dtype=object)  # np.load unpickles this only with allow_pickle
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    line = assert_one_line_error(invoke("train", "sine", "gru"))
    assert line.startswith("Error: data/datasets/sine.npz is corrupt")
    assert not (trained / "pickle-ran").exists()


# --- 4. interruption and atomic writes ------------------------------------------------------------------------

def start_long_training(project: Path) -> subprocess.Popen:
    """`python -m pipeline train sine gru` with enough epochs to be stopped mid-training, once it has started."""
    raw = tiny_params()
    raw["train"].update(epochs=5000, patience=5000)
    write_params(project, raw)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "train", "sine", "gru"], cwd=project,
                               preexec_fn=default_sigint,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=source_env())
    for line in process.stdout:  # progress lines go out every epochs/10 epochs (from the first replica group)
        if line.startswith("train sine/gru") and " epoch " in line:
            return process
    process.wait()
    pytest.fail("the train stage ended before printing progress")


@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupted_stage_exits_with_one_line_and_keeps_the_old_outputs(trained, signum, name):
    before = snapshot(trained)
    process = start_long_training(trained)
    process.send_signal(signum)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 130, rest
    assert "Traceback" not in rest
    assert rest.strip().splitlines()[-1] == ("Error: interrupted before the stage finished; nothing was written. "
                                             "Run `dvc repro` to run it again")
    after = snapshot(trained)
    del before["params.yaml"], after["params.yaml"]
    assert after == before  # the checkpoint, metrics and curve of the earlier run, byte for byte; no temp file


def test_keyboard_interrupt_inside_a_stage_is_exit_130(trained, monkeypatch):
    from pipeline.learning import fitting

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fitting, "fit", interrupted)
    before = snapshot(trained)
    result = CliRunner().invoke(cli, ["train", "sine", "gru"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == ["Error: interrupted before the stage finished; nothing was "
                                                  "written. Run `dvc repro` to run it again"]
    assert snapshot(trained) == before


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temporaries_left_by_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """SIGKILL skips every clean-up: the next write of the same output removes what the killed one left."""
    target = tmp_path / "gru.json"
    (tmp_path / ".gru.json.k1ll3d.tmp").write_text("half")
    (tmp_path / ".other.json.abc.tmp").write_text("another output's, being written")
    artifacts.write_json(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc.tmp", "gru.json"]


def test_every_file_a_stage_writes_is_renamed_into_place(project, monkeypatch):
    """All outputs go through atomic_path: every file the five stages leave was the target of a rename."""
    renamed = set()
    real_replace = os.replace

    def recording(source, target):
        renamed.add(str(Path(target).resolve().relative_to(project.resolve())))
        real_replace(source, target)

    monkeypatch.setattr(artifacts.os, "replace", recording)
    raw = tiny_params()
    use_datasets(raw, ["sine", "memory_short"])
    raw["models"] = {"persistence": {}, "linear": {}, "gru": {}}
    write_params(project, raw)
    commands = [["generate", d] for d in raw["datasets"]]
    commands += [[s, d, m] for s in ("train", "evaluate") for d in raw["datasets"] for m in raw["models"]]
    commands += [["compare", d] for d in raw["datasets"]] + [["report"]]
    for command in commands:
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.output)
    written = set(snapshot(project)) - {"params.yaml"}
    assert len(written) > 30
    assert written == renamed


# --- 7. devices -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_absent_cuda_is_the_exact_line_and_touches_nothing(trained, device):
    raw = tiny_params()
    raw["device"] = device
    write_params(trained, raw)
    before = snapshot(trained)
    line = assert_one_line_error(invoke("train", "sine", "gru"))  # evaluation runs in numpy: no device to check
    assert line == (f"Error: params.yaml: device is '{device}' but CUDA is not available on this machine; "
                    "set device: auto or device: cpu")
    assert snapshot(trained) == before


def test_auto_device_trains_and_evaluates_here(trained):
    raw = tiny_params()
    raw["device"] = "auto"
    write_params(trained, raw)
    for command in (["train", "sine", "gru"], ["evaluate", "sine", "gru"]):
        result = invoke(*command)
        assert result.exit_code == 0, result.output
