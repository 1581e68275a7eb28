"""Load params.yaml once and validate it into frozen, typed objects.

Only the CLI calls `load`; every stage receives the typed sections it needs. Every problem, from a typo in a key
to a dataset listed without its `data.<name>` entry, is one `ParamsError` line naming the key, e.g.
`params.yaml: data.sine.dt must be > 0, got -1`.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from pipeline.errors import ParamsError
from pipeline.data.generators import KINDS
from pipeline.schema import SchemaError, build, fail, require_mapping, setting, shown

# The model registry lives in models.py, which needs torch; stages that never build a model (generate, report)
# must not pay torch's import time just to validate names, so the names are listed here too.
# tests/test_models.py checks that this tuple and the registry agree.
MODEL_KINDS = ("concat", "elman", "gru", "linear", "lstm", "mean", "persistence", "rnn")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")
GATED = ("lstm", "gru")  # the kinds with a gate that keeps the old state (model.forget_bias)
MODEL_KINDS_LEARNED = GATED + ("rnn", "elman", "concat")  # trained by gradients (the others are closed-form)
# data.<name>.normalise: pipeline/models/normalisation.py implements these (its MODES; a test checks they agree)
NORMALISATIONS = ("none", "window", "window_robust", "difference")


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
    # Replicas 0..k-1 train as one network, k..2k-1 as the next (training.networks): fixed by index, so that a
    # network's replicas never depend on how many there are, and a pair extended to more replicas reuses them.
    replicas_per_network: int = setting(3, ge=1)
    # The free-running phase (fitting.fit): after teacher forcing, K fed-back steps per example; 0 turns it off.
    rollout_steps: int = setting(0, ge=0)
    rollout_lr: float = setting(0.0003, gt=0)
    rollout_epochs: int = setting(30, ge=1)
    rollout_patience: int = setting(10, ge=0)

    RENAMED: ClassVar[dict[str, str]] = {
        "replica_groups": "is retired: set train.replicas_per_network instead (the default 3 trains 5 replicas as "
                          "0-2 and 3-4, as replica_groups: 2 did)"}

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
    datasets: tuple[str, ...] | None = None  # `models.<name>.datasets`: the only datasets it runs on; None: all


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
    data_normalise: dict[str, str] = dataclasses.field(default_factory=dict)  # data.<name>.normalise, if not none

    def models_on(self, dataset: str) -> list[str]:
        """The variants that run on `dataset`: every `models:` entry but those whose `datasets:` leaves it out
        and persistence where the target is not the inputs' next value. Evaluation, the figures and the
        leaderboard list these."""
        return [m for m in self.models if self.why_not_on(dataset, m) is None]

    def why_not_on(self, dataset: str, model: str) -> str | None:
        """Why variant `model` does not run on `dataset` (its not-run record says it), or None where it runs."""
        spec = self.models[model]
        if spec.datasets is not None and dataset not in spec.datasets:
            return f"models.{model}.datasets is {', '.join(spec.datasets)}, without {dataset}"
        kind = self.data_kinds.get(dataset)
        if spec.kind == "persistence" and kind in KINDS.names() and not KINDS.get(kind).repeats_inputs:
            return (f"persistence repeats a window's last value, and data.{dataset}'s target ({kind}) has other "
                    f"features than its inputs; the mean baseline is its reference")
        return None

    def free_running(self, name: str) -> bool:
        """Whether a variant trains on its own fed-back predictions (its `train.rollout_steps` > 0)."""
        return bool(self.model_train.get(name, {}).get("rollout_steps", self.train.rollout_steps))

    def runs_nowhere(self) -> list[str]:
        """The variants with a `datasets:` of which `datasets:` lists none (e.g. after narrowing `datasets:`)."""
        return [m for m in self.models if not any(m in self.models_on(ds) for ds in self.datasets)]

    def normalise(self, name: str) -> str:
        """How the learned models and the linear baseline read `name`'s windows (models/normalisation.py)."""
        return self.data_normalise.get(name, "none")

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


SECTIONS = ("seed", "data_seed", "device", "threads", "datasets", "models", "data", "model", "train", "evaluate")
# `free_running:` held the variants trained on their own rollouts, with the datasets they ran on, in a stage matrix
# of its own; narrowing `datasets:` could not narrow that matrix (DVC cannot filter one). Those variants are now
# `models:` entries with `datasets:`; a section without models is still accepted, one with models is told where
# they went.
RETIRED = ("free_running",)


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
        if key not in SECTIONS + RETIRED:
            raise SchemaError(f"unknown key '{key}'; expected one of: {', '.join(SECTIONS)}")
    retired = raw.get("free_running")
    if retired and (not isinstance(retired, dict) or set(retired) - {"datasets", "models"} or retired.get("models")):
        fail("free_running", "is no longer a section: move each of its models into `models:` with the datasets "
             "it runs on, e.g. `rnn_fr: {kind: rnn, datasets: [sincos, ramp], train: {rollout_steps: 10}}`")
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
    data, kinds, data_train, data_normalise = _parse_data(raw["data"], train)
    models, model_train = _parse_models(raw["models"], model, train, kinds)
    listed = _parse_datasets(raw["datasets"], data)
    params = Params(
        seed=seed, data_seed=raw["data_seed"], device=device, threads=threads,
        datasets=listed, models=models, data=data, data_kinds=kinds, model=model, train=train,
        evaluate=build(EvalParams, raw["evaluate"], "evaluate"),
        model_train=model_train, data_train=data_train, data_normalise=data_normalise,
    )
    _check_rollouts(params)
    return params


def _check_rollouts(params: Params) -> None:
    """A pair that would train on its rollouts where the data has none is one line now, not a failed train
    stage after DVC has deleted its outputs."""
    for ds in params.datasets:
        if KINDS.get(params.data_kinds[ds]).rolls_out:
            continue
        for name in params.models_on(ds):
            if params.models[name].kind in MODEL_KINDS_LEARNED and params.training(ds, name).rollout_steps:
                fail(f"models.{name}", f"trains on its rollouts (train.rollout_steps) but {ds} cannot be rolled "
                     f"out (its target is not its next value); give it `datasets:` without {ds}, or set "
                     f"data.{ds}.train.rollout_steps: 0")


def _parse_variant_datasets(raw: Any, key: str, kind: str, rollout_steps: int, kinds: dict[str, str]
                            ) -> tuple[str, ...] | None:
    """`models.<name>.datasets`: the datasets a variant runs on, of those `datasets:` lists. Names must be
    `data:` entries (not necessarily listed, so that narrowing `datasets:` never makes a variant invalid); a
    variant trained on its own rollouts may name only datasets that can be rolled out."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        fail(key, f"must be a list of data.<name> entries, got {shown(raw)}")
    for name in raw:
        if name not in kinds:
            fail(key, f"lists {shown(name)}, which no data: entry names; choose from: {', '.join(sorted(kinds))}")
        if rollout_steps and not KINDS.get(kinds[name]).rolls_out:
            fail(key, f"lists {shown(name)}, a {kinds[name]} dataset, which cannot be rolled out (its target is "
                 f"not its next value), but this {kind} trains on its rollouts (train.rollout_steps); remove it")
    if len(set(raw)) != len(raw):
        fail(key, f"lists a dataset twice: {raw}")
    return tuple(raw)


def _train_override(raw: Any, key: str, train: TrainParams) -> dict[str, Any]:
    """A `train:` mapping inside models.<name> or data.<name>: the TrainParams keys it sets, validated (each
    value on its own, and together with the `train:` section)."""
    raw = require_mapping(key, raw)
    if not raw:
        return {}
    full = build(TrainParams, {**dataclasses.asdict(train), **raw}, key)
    return {name: getattr(full, name) for name in raw}


# What a kind's windows are read as unless its entry says otherwise. A user's series often trends, and then the
# training part's statistics put the test part outside the range the models saw (docs/your-own-data.md has the
# measurement behind this default); the synthetic tasks keep the behaviour they were measured with.
DEFAULT_NORMALISE = {"csv": "window"}
DATA_ENTRY_KEYS = ("kind", "train", "normalise")  # the keys of every data: entry besides its kind's own


def _parse_normalise(entry: dict, name: str, kind: str) -> str:
    mode = entry.get("normalise", DEFAULT_NORMALISE.get(kind, "none"))
    if mode not in NORMALISATIONS:
        fail(f"data.{name}.normalise", f"must be one of: {', '.join(NORMALISATIONS)}; got {shown(mode)}")
    if mode != "none" and not KINDS.get(kind).rolls_out:
        fail(f"data.{name}.normalise", f"applies to data whose target is its next value; a {kind} dataset's is "
             f"not, so use none (got {shown(mode)})")
    return mode


def _parse_data(raw: Any, train: TrainParams
                ) -> tuple[dict[str, Any], dict[str, str], dict[str, dict], dict[str, str]]:
    data, kinds, overrides, normalise = {}, {}, {}, {}
    for name, entry in require_mapping("data", raw).items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            fail("data", f"has a bad name {shown(name)}: use letters, digits and _ (it becomes a file name)")
        entry = require_mapping(f"data.{name}", entry)
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            fail(f"data.{name}.kind", f"must be one of: {', '.join(KINDS.names())}; got {shown(kind)}")
        data[name] = build(KINDS.get(kind).spec, entry, f"data.{name}", ignore=DATA_ENTRY_KEYS)
        kinds[name] = kind
        overrides[name] = _train_override(entry.get("train"), f"data.{name}.train", train)
        normalise[name] = _parse_normalise(entry, name, kind)
    return (data, kinds, {name: o for name, o in overrides.items() if o},
            {name: mode for name, mode in normalise.items() if mode != "none"})


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


def _parse_models(raw: Any, shared: ModelParams, train: TrainParams, kinds: dict[str, str]
                  ) -> tuple[dict[str, ModelSpec], dict[str, dict[str, Any]]]:
    section = "models"
    raw = require_mapping(section, raw)
    if not raw:
        fail(section, "must name at least one model, e.g. `lstm: {}`")
    models, overrides = {}, {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            fail(section, f"has a bad name {shown(name)}: use letters, digits and _ (it becomes a file name)")
        variant = build(VariantParams, entry, f"{section}.{name}", ignore=("train", "datasets"))
        kind = variant.kind or name
        if kind not in MODEL_KINDS:
            where = f"{section}.{name}.kind" if variant.kind else f"{section}.{name}"
            fail(where, f"is not a known model; choose from: {', '.join(MODEL_KINDS)} "
                 f"(or give the entry a `kind:`), got {shown(kind)}")
        if variant.forget_bias is not None and kind not in GATED:
            fail(f"{section}.{name}.forget_bias", f"applies to lstm and gru variants only; this one is a {kind}")
        forget_bias = variant.forget_bias if variant.forget_bias is not None else shared.forget_bias
        entry = require_mapping(f"{section}.{name}", entry)
        override = _train_override(entry.get("train"), f"{section}.{name}.train", train)
        if override:
            overrides[name] = override
        learned = kind in MODEL_KINDS_LEARNED  # a baseline ignores `train:`'s rollout_steps
        steps = override.get("rollout_steps", train.rollout_steps) if learned else 0
        if override.get("rollout_steps") and not learned:
            fail(f"{section}.{name}.train.rollout_steps", f"applies to learned variants only; this one is a "
                 f"{kind}, a closed-form baseline with nothing to train on its rollouts")
        runs_on = _parse_variant_datasets(entry.get("datasets"), f"{section}.{name}.datasets", kind, steps, kinds)
        models[name] = ModelSpec(name, kind, variant.hidden or shared.hidden, variant.layers or shared.layers,
                                 forget_bias if kind in GATED else None, runs_on)
    return models, overrides
