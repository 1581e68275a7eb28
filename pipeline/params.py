"""Load params.yaml once and validate it into frozen, typed objects.

Only the CLI calls `load`; every stage receives the typed sections it needs. Every problem, from a typo in a key
to a dataset listed without its `data.<name>` entry, is one `ParamsError` line naming the key, e.g.
`params.yaml: data.sine.dt must be > 0, got -1`.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.generators import KINDS
from pipeline.schema import SchemaError, build, fail, require_mapping, setting, shown

# The model registry lives in models.py, which needs torch; stages that never build a model (generate, report)
# must not pay torch's import time just to validate names, so the names are listed here too.
# tests/test_models.py checks that this tuple and the registry agree.
MODEL_KINDS = ("concat", "elman", "gru", "linear", "lstm", "persistence", "rnn")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")
GATED = ("lstm", "gru")  # the kinds with a gate that keeps the old state (model.forget_bias)


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Sizes shared by every learned variant (`dvc exp run -S model.hidden=20` changes them all)."""

    hidden: int = setting(16, ge=1)
    layers: int = setting(1, ge=1)
    forget_bias: float | None = setting(None)  # LSTM forget / GRU update gate's initial bias; null: torch's


@dataclasses.dataclass(frozen=True)
class VariantParams:
    """One entry of `models:`; `kind` defaults to the entry's name, the sizes to the `model:` section. Its
    `train:` mapping (read by `_parse_models`) overrides `train:` for this variant."""

    kind: str = setting("")
    hidden: int = setting(0, ge=1)
    layers: int = setting(0, ge=1)
    forget_bias: float | None = setting(None)


SCHEDULES = ("constant", "exponential", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    epochs: int = setting(100, ge=1)
    batch_size: int = setting(64, ge=1)
    lr: float = setting(0.01, gt=0)
    schedule: str = setting("constant", choices=SCHEDULES)  # the learning rate over epochs (schedules.py)
    lr_decay: float = setting(0.985, gt=0, le=1)  # exponential: lr x lr_decay ** (epoch - 1)
    lr_min: float = setting(0.0, ge=0)  # cosine: from lr down to lr_min over `epochs`
    clip_norm: float = setting(1.0, ge=0)  # 0 turns clipping off
    patience: int = setting(10, ge=0)  # early stopping; 0: every epoch runs (the best weights are still kept)
    replicas: int = setting(5, ge=1)  # learned pairs train this many seeds at once; baselines are one fit
    replica_groups: int = setting(2, ge=1)  # networks the replicas are split into (training.replica_groups)
    # The free-running phase (fitting.fit): after teacher forcing, K fed-back steps per example; 0 turns it off.
    rollout_steps: int = setting(0, ge=0)
    rollout_lr: float = setting(0.0003, gt=0)
    rollout_epochs: int = setting(30, ge=1)
    rollout_patience: int = setting(10, ge=0)

    def check(self, key: str) -> None:
        if self.schedule == "cosine" and self.lr_min > self.lr:
            fail(f"{key}.lr_min", f"must be <= lr ({self.lr}) for the cosine schedule, got {self.lr_min}")


@dataclasses.dataclass(frozen=True)
class EvalParams:
    tolerance: float = setting(0.1, gt=0)  # valid horizon: error within this fraction of the data's std
    horizons: tuple[int, ...] = setting((1, 10, 100), ge=1)
    plot_sequences: int = setting(3, ge=1)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A fully resolved model variant: what train builds for `models.<name>`."""

    name: str
    kind: str
    hidden: int
    layers: int
    forget_bias: float | None = None


@dataclasses.dataclass(frozen=True)
class Params:
    seed: int
    data_seed: int
    device: str
    threads: int
    datasets: tuple[str, ...]
    models: dict[str, ModelSpec]
    data: dict[str, Any]  # name -> the spec dataclass of its kind
    data_kinds: dict[str, str]
    model: ModelParams
    train: TrainParams
    evaluate: EvalParams
    model_train: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # models.<name>.train
    data_train: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # data.<name>.train
    # free_running.models (also in `models` above, by name) run on free_running.datasets only
    free_running_models: tuple[str, ...] = ()
    free_running_datasets: tuple[str, ...] = ()

    def models_on(self, dataset: str) -> list[str]:
        """The variants that train on `dataset`: every `models:` entry, then the free-running ones where that
        dataset is among `free_running.datasets`. The leaderboard and the figures list these."""
        fr = set(self.free_running_models)
        return [m for m in self.models
                if m not in fr or dataset in self.free_running_datasets]

    def dataset(self, name: str) -> Any:
        if name not in self.data:
            raise ParamsError(f"params.yaml: no data.{name} entry; datasets are: {', '.join(sorted(self.data))}")
        return self.data[name]

    def variant(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ParamsError(f"params.yaml: no models.{name} entry; models are: {', '.join(self.models)}")
        return self.models[name]

    def training(self, dataset: str, model: str) -> TrainParams:
        """The train settings of one (dataset, model) pair: `train:`, then the variant's `models.<name>.train:`,
        then the dataset's `data.<name>.train:`, each overriding the keys it sets. The dataset comes last
        because its settings are what that data needs whatever the variant (e.g. more epochs for a harder
        task); a variant's settings are its recipe everywhere else."""
        self.variant(model), self.dataset(dataset)
        overrides = {**self.model_train.get(model, {}), **self.data_train.get(dataset, {})}
        return dataclasses.replace(self.train, **overrides) if overrides else self.train


SECTIONS = ("seed", "data_seed", "device", "threads", "datasets", "models", "free_running", "data", "model", "train",
            "evaluate")


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the project root (where params.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        return parse(raw)
    except SchemaError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def parse(raw: Any) -> Params:
    raw = require_mapping("the file", raw)
    for key in raw:
        if key not in SECTIONS:
            raise SchemaError(f"unknown key '{key}'; expected one of: {', '.join(SECTIONS)}")
    for key in SECTIONS:
        if key not in raw:
            raise SchemaError(f"missing key '{key}'; add it (the README lists every setting)")
    seed, threads = raw["seed"], raw["threads"]
    for key in ("seed", "data_seed"):
        if isinstance(raw[key], bool) or not isinstance(raw[key], int) or raw[key] < 0:
            fail(key, f"must be an integer >= 0, got {shown(raw[key])}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        fail("threads", f"must be an integer >= 0 (0: torch's default), got {shown(threads)}")
    device = raw["device"]
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        fail("device", f"must be auto, cpu, cuda, cuda:N or mps; got {shown(device)}")
    model = build(ModelParams, raw["model"], "model")
    train = build(TrainParams, raw["train"], "train")
    data, kinds, data_train = _parse_data(raw["data"], train)
    models, model_train = _parse_models(raw["models"], model, train)
    listed = _parse_datasets(raw["datasets"], data)
    fr_datasets, fr_models, fr_train = _parse_free_running(raw["free_running"], listed, kinds, models, model,
                                                            train)
    return Params(
        seed=seed, data_seed=raw["data_seed"], device=device, threads=threads,
        datasets=listed, models={**models, **fr_models}, data=data, data_kinds=kinds, model=model, train=train,
        evaluate=build(EvalParams, raw["evaluate"], "evaluate"),
        model_train={**model_train, **fr_train}, data_train=data_train,
        free_running_models=tuple(fr_models), free_running_datasets=fr_datasets,
    )


def _parse_free_running(raw: Any, listed: tuple[str, ...], kinds: dict[str, str], others: dict[str, ModelSpec],
                        shared: ModelParams, train: TrainParams
                        ) -> tuple[tuple[str, ...], dict[str, ModelSpec], dict[str, dict[str, Any]]]:
    """`free_running:` holds the variants that train on their own fed-back predictions and the datasets they run
    on. A section of its own because DVC's stage matrix crosses every dataset with every model and cannot leave
    a pair out, and the memory tasks cannot be rolled out: these variants get a matrix of their own
    (dvc.yaml's train_fr) over the datasets that can; each dataset's evaluate stage scores them with the others."""
    raw = require_mapping("free_running", raw)
    for key in raw:
        if key not in ("datasets", "models"):
            fail("free_running", f"has an unknown key '{key}'; it holds `datasets:` and `models:`")
    names = raw.get("datasets") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("free_running.datasets", f"must be a list of dataset names, got {shown(names)}")
    for name in names:
        if name not in listed:
            fail("free_running.datasets", f"lists {shown(name)}, which `datasets:` does not; add it there or "
                 f"choose from: {', '.join(listed)}")
        if not KINDS.get(kinds[name]).rolls_out:
            fail("free_running.datasets", f"lists {shown(name)}, a {kinds[name]} dataset, which cannot be rolled "
                 "out (its target is not its next value); remove it from this list")
    if len(set(names)) != len(names):
        fail("free_running.datasets", f"lists a dataset twice: {names}")
    models, overrides = _parse_models(raw.get("models") or {}, shared, train, section="free_running.models",
                                      allow_empty=True)
    for name, spec in models.items():
        if spec.kind not in GATED + ("rnn", "elman", "concat"):
            fail(f"free_running.models.{name}", f"is a {spec.kind}, a closed-form baseline with nothing to train "
                 "on its rollouts; list it under `models:`")
        if name in others:
            fail(f"free_running.models.{name}", "has the name of a `models:` entry; give it its own name")
        steps = overrides.get(name, {}).get("rollout_steps", train.rollout_steps)
        if not steps:
            fail(f"free_running.models.{name}.train.rollout_steps", "must be > 0 here (these variants train on "
                 "their own rollouts); a teacher-forced variant belongs under `models:`")
    return tuple(names), models, overrides


def _train_override(raw: Any, key: str, train: TrainParams) -> dict[str, Any]:
    """A `train:` mapping inside models.<name> or data.<name>: the TrainParams keys it sets, validated (each
    value on its own, and together with the `train:` section)."""
    raw = require_mapping(key, raw)
    if not raw:
        return {}
    full = build(TrainParams, {**dataclasses.asdict(train), **raw}, key)
    return {name: getattr(full, name) for name in raw}


def _parse_data(raw: Any, train: TrainParams) -> tuple[dict[str, Any], dict[str, str], dict[str, dict]]:
    data, kinds, overrides = {}, {}, {}
    for name, entry in require_mapping("data", raw).items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            fail("data", f"has a bad name {shown(name)}: use letters, digits and _ (it becomes a file name)")
        entry = require_mapping(f"data.{name}", entry)
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            fail(f"data.{name}.kind", f"must be one of: {', '.join(KINDS.names())}; got {shown(kind)}")
        data[name] = build(KINDS.get(kind).spec, entry, f"data.{name}", ignore=("kind", "train"))
        kinds[name] = kind
        overrides[name] = _train_override(entry.get("train"), f"data.{name}.train", train)
    return data, kinds, {name: o for name, o in overrides.items() if o}


def _parse_datasets(raw: Any, data: dict[str, Any]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        fail("datasets", f"must be a non-empty list of data.<name> entries, got {shown(raw)}")
    for name in raw:
        if not isinstance(name, str):
            fail("datasets", f"must list data.<name> entries by name, got {shown(name)}")
        if name not in data:
            fail("datasets", f"lists {shown(name)} but there is no data.{name} entry; "
                 f"add one or choose from: {', '.join(sorted(data))}")
    if len(set(raw)) != len(raw):
        fail("datasets", f"lists a dataset twice: {raw}")
    return tuple(raw)


def _parse_models(raw: Any, shared: ModelParams, train: TrainParams, section: str = "models",
                  allow_empty: bool = False) -> tuple[dict[str, ModelSpec], dict[str, dict[str, Any]]]:
    raw = require_mapping(section, raw)
    if not raw and not allow_empty:
        fail(section, "must name at least one model, e.g. `lstm: {}`")
    models, overrides = {}, {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            fail(section, f"has a bad name {shown(name)}: use letters, digits and _ (it becomes a file name)")
        variant = build(VariantParams, entry, f"{section}.{name}", ignore=("train",))
        kind = variant.kind or name
        if kind not in MODEL_KINDS:
            where = f"{section}.{name}.kind" if variant.kind else f"{section}.{name}"
            fail(where, f"is not a known model; choose from: {', '.join(MODEL_KINDS)} "
                 f"(or give the entry a `kind:`), got {shown(kind)}")
        if variant.forget_bias is not None and kind not in GATED:
            fail(f"{section}.{name}.forget_bias", f"applies to lstm and gru variants only; this one is a {kind}")
        forget_bias = variant.forget_bias if variant.forget_bias is not None else shared.forget_bias
        models[name] = ModelSpec(name, kind, variant.hidden or shared.hidden, variant.layers or shared.layers,
                                 forget_bias if kind in GATED else None)
        override = _train_override(require_mapping(f"{section}.{name}", entry).get("train"),
                                   f"{section}.{name}.train", train)
        if override:
            overrides[name] = override
    return models, overrides
