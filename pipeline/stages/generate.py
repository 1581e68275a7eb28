"""The generate stage: build one dataset from its `data.<name>` params and write it with a preview figure."""

import numpy as np

from pipeline.files import datasets
from pipeline.files.artifacts import Paths
from pipeline.data.generators import KINDS
from pipeline.params import Params


def build(params: Params, name: str) -> datasets.Dataset:
    """Deterministic: the same seed and params give the same arrays, bit for bit."""
    kind = KINDS.get(params.data_kinds[name], f"data.{name}.kind")
    data = kind.generate(params.dataset(name), name, np.random.default_rng(params.data_seed))
    if params.normalise(name) != "none":  # how the models read its windows travels with the data (absent: none)
        data.meta["normalise"] = params.normalise(name)
    return data


def run(params: Params, name: str, paths: Paths = Paths()) -> datasets.Dataset:
    from pipeline.figures import plotting  # matplotlib only after the data is known to be good

    data = build(params, name)
    datasets.save(data, paths.dataset(name))
    plotting.dataset_preview(paths.dataset_preview(name), data)
    sizes = data.meta["sizes"]
    rollout = (f", rollout {data.meta['rollout_sequences']} x {data.meta['rollout_steps']} steps"
               if data.has_rollout else ", no rollout")
    lengths = data.lengths("train")
    steps = data.meta["window"] if lengths is None else f"{lengths.min()}-{lengths.max()}"
    series = f" from {len(data.meta['series'])} series" if len(data.meta.get("series", [])) > 1 else ""
    print(f"generate {name}: {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test windows of "
          f"{steps} x {data.meta['n_features']}{series}{rollout}")
    for line in _data_notes(params, name, data):
        print(f"generate {name}: {line}")
    return data


def _data_notes(params: Params, name: str, data: datasets.Dataset) -> list[str]:
    """What a user's file needed: how many gaps were filled or rows dropped, and uneven time steps."""
    notes = []
    if data.meta.get("filled_cells"):
        notes.append(f"filled {data.meta['filled_cells']} missing cell(s) "
                     f"(data.{name}.missing: {params.dataset(name).missing})")
    if data.meta.get("dropped_rows"):
        notes.append(f"dropped {data.meta['dropped_rows']} row(s) with missing cells (data.{name}.missing: drop)")
    return notes + list(data.meta.get("notes", []))
