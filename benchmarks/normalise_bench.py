"""Which `data.<name>.normalise` a user's series needs: every mode on a dataset, through the real stages.

For each mode the dataset is generated, every model of the default params trained (learned ones as R replicas)
and evaluated, exactly as `dvc repro` would with `-S data.NAME.normalise=MODE`, in a temporary project. The table
says, per mode: persistence's and linear's test RMSE, the best learned kind's median test RMSE and in how many
replicas it beats persistence, and the backtest's MASE (persistence against the best learned kind, by median).

    python -m benchmarks.normalise_bench trending stores            # the default: every mode, 5 replicas
    python -m benchmarks.normalise_bench trending --modes none window --replicas 3

It measures; it asserts nothing (tests/test_normalisation.py tests the code).
"""

import argparse
import contextlib
import copy
import io
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import yaml

from benchmarks.timing import timed
from pipeline import params as params_module
from pipeline.files.artifacts import Paths
from pipeline.models.normalisation import MODES
from pipeline.params import MODEL_KINDS_LEARNED
from pipeline.stages import evaluate, generate, train

ROOT = Path(__file__).resolve().parents[1]


def project_params(dataset: str, mode: str, replicas: int | None) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["datasets"], raw["device"] = [dataset], "cpu"
    raw["data"][dataset]["normalise"] = mode
    if replicas:
        raw["train"]["replicas"] = replicas
    return raw


def measure(dataset: str, mode: str, replicas: int | None) -> dict:
    """Every model of `dataset` under `mode`: per model its test RMSE per replica, backtest MASE per replica."""
    folder = Path(tempfile.mkdtemp(prefix=f"normalise-{mode}-"))
    cwd = Path.cwd()
    try:
        shutil.copytree(ROOT / "data" / "raw", folder / "data" / "raw")
        (folder / "params.yaml").write_text(yaml.safe_dump(project_params(dataset, mode, replicas), sort_keys=False))
        os.chdir(folder)
        loaded = params_module.load("params.yaml")
        paths = Paths()
        with contextlib.redirect_stdout(io.StringIO()):
            generate.run(loaded, dataset, paths)
            seconds, _ = timed(lambda: [train.run(loaded, dataset, m, paths) for m in loaded.models_on(dataset)])
            evaluate.run_dataset(loaded, dataset, paths)
        result = {}
        for model in loaded.models_on(dataset):
            ev = json.loads(paths.eval_metrics(dataset, model).read_text())
            rows = ev["per_replica"].values()
            result[model] = {"test_rmse": [r["test_rmse"] for r in rows],
                             "mase": [r.get("rollout_mase") for r in rows]}
        return {"models": result, "train_seconds": seconds}
    finally:
        os.chdir(cwd)
        shutil.rmtree(folder, ignore_errors=True)


def summary(run: dict) -> dict:
    models = run["models"]
    persistence = models["persistence"]["test_rmse"][0]
    learned = {m: v for m, v in models.items() if m in MODEL_KINDS_LEARNED}
    best = min(learned, key=lambda m: statistics.median(learned[m]["test_rmse"]))
    mase_best = [v for v in learned[best]["mase"] if v is not None]
    return {"persistence": persistence, "linear": models["linear"]["test_rmse"][0], "best": best,
            "best_rmse": statistics.median(learned[best]["test_rmse"]),
            "range": (min(learned[best]["test_rmse"]), max(learned[best]["test_rmse"])),
            "beats": sum(v < persistence for v in learned[best]["test_rmse"]),
            "beats_mase": sum(v < models["persistence"]["mase"][0] for v in mase_best),
            "replicas": len(learned[best]["test_rmse"]),
            "mase_persistence": models["persistence"]["mase"][0], "mase_linear": models["linear"]["mase"][0],
            "mase_best": statistics.median(mase_best) if mase_best else None,
            "seconds": run["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="data: entries of params.yaml (kinds whose target is next)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--replicas", type=int, default=None, help="train.replicas (default: params.yaml's)")
    args = parser.parse_args()
    print("dataset   mode           persistence  linear   best learned (median [min-max])     beats  "
          "MASE: persistence / linear / best   beats  train s")
    for dataset in args.datasets:
        for mode in args.modes:
            s = summary(measure(dataset, mode, args.replicas))
            mase = (f"{s['mase_persistence']:.3g} / {s['mase_linear']:.3g} / {s['mase_best']:.3g}"
                    if s["mase_best"] is not None else "-")
            print(f"{dataset:<9} {mode:<14} {s['persistence']:<12.4g} {s['linear']:<8.4g} "
                  f"{s['best']:<5} {s['best_rmse']:.4g} [{s['range'][0]:.4g}-{s['range'][1]:.4g}]".ljust(87)
                  + f"{s['beats']}/{s['replicas']}   {mase:<33} {s['beats_mase']}/{s['replicas']}   "
                  f"{s['seconds']:.0f}", flush=True)


if __name__ == "__main__":
    main()
