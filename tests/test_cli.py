"""The command-line interface: every user error is one `Error:` line with exit status 1, no traceback, and
leaves no output file behind."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from pipeline.files import datasets
from pipeline.cli import cli

from conftest import tiny_params, use_datasets, write_params

COMMANDS = {"check", "generate", "train", "evaluate", "compare", "report"}
TINY_DATASETS = "sine, sincos, ramp, trajectory, memory_short, memory_long, mackey_glass, lorenz, adding"
TINY_MODELS = "persistence, mean, linear, elman, concat, rnn, lstm, gru, rnn_fr"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_one_line_error(result: Result) -> str:
    """The standard for every user error: status 1, exactly one line `Error: ...`, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def test_help_lists_every_stage_command():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1].strip().splitlines()
    assert COMMANDS <= {line.split()[0] for line in listed if line.strip()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "--params" in result.output


def test_generate_writes_dataset_and_preview(project):
    result = invoke("generate", "sine")
    assert result.exit_code == 0, result.output
    npz = project / "data" / "datasets" / "sine.npz"
    png = project / "plots" / "images" / "datasets" / "sine.png"
    assert npz.stat().st_size > 0
    assert png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = datasets.load(Path("data/datasets/sine.npz"))
    assert data.meta["name"] == "sine" and data.has_rollout
    assert result.output.startswith("generate sine: ")
    assert files(project) == {"params.yaml", "data/datasets/sine.npz", "plots/images/datasets/sine.png"}


def test_generate_twice_gives_identical_arrays(project):
    assert invoke("generate", "ramp").exit_code == 0
    first = datasets.load(Path("data/datasets/ramp.npz"))
    assert invoke("generate", "ramp").exit_code == 0
    second = datasets.load(Path("data/datasets/ramp.npz"))
    assert all(np.array_equal(getattr(first, a), getattr(second, a)) for a in datasets.ARRAYS)


def test_generate_unknown_dataset(project):
    before = files(project)
    line = assert_one_line_error(invoke("generate", "weather"))
    assert line == f"Error: dataset 'weather' is not listed in params.yaml `datasets:` ({TINY_DATASETS})"
    assert files(project) == before


def test_generate_dataset_defined_but_not_listed(project):
    raw = tiny_params()
    use_datasets(raw, ["sine"])
    write_params(project, raw)
    before = files(project)
    line = assert_one_line_error(invoke("generate", "ramp"))
    assert line == "Error: dataset 'ramp' is not listed in params.yaml `datasets:` (sine)"
    assert files(project) == before


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["data"]["sine"].update(dt=-0.5), "Error: params.yaml: data.sine.dt must be > 0, got -0.5"),
    (lambda r: r["train"].update(lr="fast"), "Error: params.yaml: train.lr must be a number, got 'fast'"),
    (lambda r: r["model"].update(hiden=3),
     "Error: params.yaml: unknown key 'model.hiden'; expected one of: forget_bias, hidden, layers"),
    (lambda r: r.update(device="gpu"),
     "Error: params.yaml: device must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"),
    (lambda r: r["data"]["memory_short"].update(length=[12, 5]),
     "Error: params.yaml: data.memory_short.length must be [min, max] with min <= max, got [12, 5]"),
], ids=["negative-dt", "lr-text", "typo", "device", "length-range-reversed"])
def test_generate_with_bad_params_value(project, change, expected):
    raw = tiny_params()
    change(raw)
    write_params(project, raw)
    before = files(project)
    assert assert_one_line_error(invoke("generate", "sine")) == expected
    assert files(project) == before
    assert not (project / "data" / "datasets").exists()


def test_generate_with_invalid_yaml(project):
    (project / "params.yaml").write_text("seed: 0\ndevice: [cpu\n")
    line = assert_one_line_error(invoke("generate", "sine"))
    assert line.startswith("Error: params.yaml is not valid YAML at line 3")
    assert not (project / "data" / "datasets").exists()


def test_params_option_reads_another_file(project):
    raw = tiny_params()
    raw["data"]["sine"]["window"] = 7
    write_params(project / "data", raw)
    result = invoke("generate", "sine", "--params", "data/params.yaml")
    assert result.exit_code == 0, result.output
    assert datasets.load(Path("data/datasets/sine.npz")).meta["window"] == 7


def test_params_option_with_missing_file(project):
    line = assert_one_line_error(invoke("generate", "sine", "--params", "nope.yaml"))
    assert line == "Error: nope.yaml not found; run from the project root (where params.yaml is)"


def test_generate_csv_with_bad_file_writes_nothing(project):
    (project / "data" / "raw" / "s.csv").write_text("date,price\n" + "".join(f"{i},{i}\n" for i in range(50)))
    raw = tiny_params()
    raw["data"]["mine"] = {"kind": "csv", "path": "data/raw/s.csv", "column": "value", "window": 5}
    raw["datasets"].append("mine")
    write_params(project, raw)
    before = files(project)
    line = assert_one_line_error(invoke("generate", "mine"))
    assert line == "Error: data/raw/s.csv has no column 'value' (data.mine.column); columns are: date, price"
    assert files(project) == before


def test_train_unknown_model_lists_models(project):
    assert invoke("generate", "sine").exit_code == 0
    before = files(project)
    line = assert_one_line_error(invoke("train", "sine", "lstn"))
    assert line == f"Error: params.yaml: no models.lstn entry; models are: {TINY_MODELS}"
    assert files(project) == before


def test_train_unknown_dataset(project):
    line = assert_one_line_error(invoke("train", "weather", "lstm"))
    assert line.startswith("Error: dataset 'weather' is not listed in params.yaml `datasets:`")


def test_train_before_generate_says_run_dvc_repro(project):
    line = assert_one_line_error(invoke("train", "sine", "linear"))
    assert line == "Error: data/datasets/sine.npz does not exist; run `dvc repro` to generate it"
    assert not (project / "data" / "models").exists()


def test_train_writes_checkpoint_metrics_and_curve(project):
    assert invoke("generate", "ramp").exit_code == 0
    result = invoke("train", "ramp", "rnn")
    assert result.exit_code == 0, result.output
    assert (project / "data" / "models" / "ramp" / "rnn.npz").stat().st_size > 0
    assert (project / "metrics" / "train" / "ramp" / "rnn.json").stat().st_size > 0
    curve = (project / "plots" / "train" / "ramp" / "rnn.csv").read_text().splitlines()
    assert curve[0] == "epoch,replica,train_loss,val_loss" and len(curve) == 1 + 2 * 3  # epochs: 2, replicas: 3


def test_evaluate_and_compare_reject_unknown_dataset(project):
    for command in (["evaluate", "weather", "lstm"], ["compare", "weather"]):
        line = assert_one_line_error(invoke(*command))
        assert line.startswith("Error: dataset 'weather' is not listed"), command


def test_report_before_anything_ran_says_run_dvc_repro(project):
    line = assert_one_line_error(invoke("report"))
    assert line.startswith("Error: ") and "run `dvc repro`" in line


def test_generate_with_list_as_kind_is_one_line_error(project):
    raw = tiny_params()
    raw["data"]["sine"]["kind"] = ["sine"]
    write_params(project, raw)
    result = invoke("generate", "sine")
    assert not isinstance(result.exception, TypeError), "escapes as a TypeError"
    line = assert_one_line_error(result)
    assert line.startswith("Error: params.yaml: data.sine.kind must be one of: ")


def test_train_with_newline_in_device_is_one_line_error(project):
    raw = tiny_params()
    write_params(project, raw)
    assert invoke("generate", "sine").exit_code == 0
    raw["device"] = "cpu\n"
    write_params(project, raw)
    result = invoke("train", "sine", "linear")
    assert not isinstance(result.exception, RuntimeError), "crashes in torch.device with a traceback"
    line = assert_one_line_error(result)
    assert line.startswith("Error: params.yaml: device must be auto, cpu, cuda, cuda:N or mps")


def test_memory_of_different_lengths_generates_trains_and_evaluates(project):
    """A memory dataset of 4 to 12 values, x[-3] + x[-1] of each sequence's own end, through every stage's command:
    every model trains and is scored, and the lengths reach both: the linear baseline, right-aligned, is exact,
    and persistence scores each window's last real value."""
    raw = use_datasets(tiny_params(), ["memory_short"])
    raw["data"]["memory_short"].update(length=[4, 12], lag=-3)
    write_params(project, raw)
    assert invoke("generate", "memory_short").exit_code == 0
    data = datasets.load(Path("data/datasets/memory_short.npz"))
    lengths = data.lengths("test")
    assert lengths is not None and len(set(lengths.tolist())) > 1
    models = TINY_MODELS.split(", ")[:-1]  # rnn_fr runs on ramp only
    for model in models:
        result = invoke("train", "memory_short", model)
        assert result.exit_code == 0, result.output
    result = invoke("evaluate", "memory_short")
    assert result.exit_code == 0, result.output
    metrics = {m: json.loads((project / "metrics" / "eval" / "memory_short" / f"{m}.json").read_text())
               for m in models}
    assert all(math.isfinite(m["test"]["rmse"]) and "rollout" not in m for m in metrics.values())
    last = data.x_test[np.arange(len(lengths)), lengths - 1].astype(np.float64)
    persistence = math.sqrt(np.mean((last - data.y_test) ** 2))
    assert metrics["persistence"]["test"]["rmse"] == pytest.approx(persistence, rel=1e-5)
    assert metrics["linear"]["test"]["rmse"] < 1e-3 < persistence
