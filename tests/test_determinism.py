"""The same numbers on every machine: what the stages write must not depend on which BLAS or SIMD kernels the CPU
gets (OpenBLAS picks its kernels per CPU, numpy dispatches np.tanh per CPU; issue 13, item 7).

A learned model's prediction is the float32 rounding of its forward computed by inference's exact kernels (whose
bits do not depend on the CPU), computed mostly on fast ones (BLAS, np.tanh) behind the hooks
`inference._matmul` and `inference._tanh`; the linear baseline is fitted and evaluated by exact code only. These
tests swap other fast kernels in (the exact ones themselves; a BLAS-free reference: np.einsum without `optimize`
and math.tanh per element; a tanh perturbed by 1e-13, far more than any CPU's kernels differ) and find every
written file byte-identical, although the float64 numbers inside differ in their last bits. No test sets
OPENBLAS_CORETYPE or any other kernel selection: the machine's settings are left as they are.
"""

import ast
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import params
from pipeline.stages import evaluate as evaluation
from pipeline.stages import generate
from pipeline.models import inference
from pipeline.stages import train as training
from pipeline.learning import models
from pipeline.files.artifacts import Paths, guaranteed, significant

from conftest import ROOT, source_env, tiny_params, use_datasets, write_params


def reference_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BLAS-free in float64, in its own summation order: einsum without `optimize` never calls BLAS."""
    return np.einsum("...k,kn->...n", np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


_math_tanh = np.vectorize(math.tanh, otypes=[np.float64])


def reference_tanh(x: np.ndarray) -> np.ndarray:
    """libm's tanh, one element at a time."""
    return _math_tanh(np.asarray(x, dtype=np.float64))


def perturbed_tanh(x: np.ndarray) -> np.ndarray:
    """np.tanh off by 1e-13 of its value: hundreds of times what two CPUs' kernels differ by."""
    return np.tanh(x) * (1 + 1e-13)


KERNELS = {
    "blas": (np.matmul, np.tanh),  # the stages' fast path: OpenBLAS and numpy's SIMD tanh, as this CPU has them
    "exact": (inference.portable_matmul, inference.portable_tanh),
    "reference": (reference_matmul, reference_tanh),
    "perturbed": (np.matmul, perturbed_tanh),
}
DATASETS = ("sine", "sincos", "trajectory", "memory_short")  # 1 and 2 features, long and short rollouts, none
LEARNED = ("elman", "concat", "rnn", "lstm", "gru")
WRITTEN = ("metrics", "plots", "data/predictions", "data/models")  # everything but the (shared) datasets


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[params.Params, Path]:
    """A tiny project: datasets generated and learned pairs trained once (3 replicas each)."""
    root = tmp_path_factory.mktemp("project")
    raw = tiny_params()
    raw["models"].pop("rnn_fr")  # every model here runs on every dataset
    loaded = params.parse(raw)
    for ds in DATASETS:
        generate.run(loaded, ds, Paths(root))
        for model in LEARNED:
            training.run(loaded, ds, model, Paths(root))
    return loaded, root


def run_stages(loaded: params.Params, trained_root: Path, root: Path, kernels: str, monkeypatch) -> None:
    """Train the baselines and evaluate every pair into `root` with the given kernels behind the hooks."""
    for folder in ("data/datasets", "data/models"):
        shutil.copytree(trained_root / folder, root / folder)
    matmul, tanh = KERNELS[kernels]
    with monkeypatch.context() as patch:
        patch.setattr(inference, "_matmul", matmul)
        patch.setattr(inference, "_tanh", tanh)
        for ds in DATASETS:
            for model in ("persistence", "mean", "linear"):
                training.run(loaded, ds, model, Paths(root))
            for model in loaded.models:
                evaluation.run(loaded, ds, model, Paths(root))


def written(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for folder in WRITTEN for p in sorted((root / folder).rglob("*"))
            if p.is_file()}


def test_written_files_do_not_depend_on_the_kernels(trained, tmp_path, monkeypatch, capsys):
    loaded, trained_root = trained
    files = {}
    for kernels in KERNELS:
        run_stages(loaded, trained_root, tmp_path / kernels, kernels, monkeypatch)
        files[kernels] = written(tmp_path / kernels)
    capsys.readouterr()
    stage = files["blas"]
    pairs = len(DATASETS) * len(loaded.models)
    assert sum(name.startswith("metrics/eval/") for name in stage) == pairs
    assert sum(name.startswith("data/predictions/") for name in stage) == pairs
    assert b"prediction" in stage["plots/rollout/sine/gru.csv"] and stage["plots/rollout/sine/gru.csv"].count(
        b"\n") > 100  # the rollout CSVs hold predictions: the comparison has something to compare
    for kernels in ("exact", "reference", "perturbed"):
        assert files[kernels].keys() == stage.keys()
        changed = [name for name in stage if files[kernels][name] != stage[name]]
        assert changed == [], f"{kernels} kernels changed {changed}"


def test_the_kernels_do_differ_in_the_last_bits(trained):
    """The check above has teeth: behind the float32 rounding, the kernel sets give float64 predictions that
    differ in their last bits (as another CPU's BLAS would), and agree to round-off."""
    loaded, root = trained
    from pipeline.files import checkpoints, datasets

    data = datasets.load(Paths(root).dataset("sine"))
    x = data.scaled(data.x_test)
    forward = inference.restore(checkpoints.load(Paths(root).checkpoint("sine", "gru")))
    results = {name: forward.forward(x, inference.Kernels(*kernels)) for name, kernels in KERNELS.items()}
    for kernels in ("blas", "reference", "perturbed"):
        assert not np.array_equal(results[kernels], results["exact"])
        np.testing.assert_allclose(results[kernels], results["exact"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernels", ["blas", "reference"])
@pytest.mark.parametrize("kind", LEARNED)
def test_the_blas_and_reference_kernels_agree_with_the_exact_ones_to_round_off(kind, kernels):
    shape = models.Shape(input_size=2, output_size=1, window=8, hidden=5, layers=2)
    torch.manual_seed(1)
    model = models.build(kind, shape)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    from pipeline.files import checkpoints

    checkpoint = checkpoints.Checkpoint(kind, shape, [models.state_arrays(model)], Path("model.npz"))
    forward = inference.restore(checkpoint)
    x = np.random.default_rng(2).normal(size=(6, 8, 2))
    exact = forward.forward(x, inference.EXACT)
    np.testing.assert_allclose(forward.forward(x, inference.Kernels(*KERNELS[kernels])), exact, rtol=0, atol=1e-12)


def test_significant_rounds_numbers_and_arrays_by_python_formatting():
    values = np.array([[0.123456789, -98765.4321, 1e-15], [np.nan, np.inf, -np.inf]])
    got = significant(values, 4)
    assert got.shape == values.shape and got.dtype == np.float64
    np.testing.assert_array_equal(got, [[0.1235, -98770.0, 1e-15], [np.nan, np.inf, -np.inf]])
    assert significant(0.123456789) == 0.123457 and significant(2.5e-8, 1) == 2e-8  # to even, as Python rounds
    assert math.isnan(significant(float("nan")))
    single = significant(np.array([1.2345678, 3.3333333], np.float32), 3)
    assert single.dtype == np.float32 and single.tolist() == [np.float32(1.23), np.float32(3.33)]
    many = np.random.default_rng(0).normal(size=1000) * 10.0 ** np.random.default_rng(1).uniform(-9, 9, 1000)
    assert significant(many).tolist() == [float(f"{v:.6g}") for v in many.tolist()]


def test_guaranteed_writes_round_off_as_zero():
    assert guaranteed(4.2e-16, 1e-12) == 0.0 and guaranteed(-4.2e-16, 1e-12) == 0.0
    assert guaranteed(0.0123456789, 1e-12) == 0.0123457
    np.testing.assert_array_equal(guaranteed(np.array([3e-15, 2e-3, np.nan]), 1e-12), [0.0, 2e-3, np.nan])


# Calls whose bits depend on the CPU: BLAS/LAPACK products and solvers, and numpy's transcendental functions
# (SIMD-dispatched per CPU). The `@` operator is BLAS too. Correctly rounded operations (+ - * /, sqrt, rint,
# ldexp, copysign, min/max) and add.reduce/accumulate (orders fixed by the shapes) are what the exact code uses.
KERNEL_DEPENDENT = {"dot", "vdot", "inner", "matmul", "tensordot", "einsum", "linalg", "lstsq", "svd", "qr",
                    "solve", "tanh", "exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sin", "cos", "tan",
                    "arctan", "arctan2", "sinh", "cosh", "power", "float_power", "hypot", "polyval", "cbrt"}


@pytest.mark.parametrize("module", ["pipeline/models/inference.py", "pipeline/models/baselines.py",
                                    "pipeline/models/normalisation.py"])
def test_the_portable_modules_call_no_kernel_dependent_function(module):
    """A guard for later edits: `x @ w` or np.tanh in the forward or the linear baseline would make the written
    files depend on the CPU again (the hook swaps above could miss it: only the hooks swap). The fast kernels
    appear once, as the hooks' defaults."""
    tree = ast.parse((ROOT / module).read_text())
    hooks = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
             and isinstance(node.target, ast.Name) and node.target.id in ("_matmul", "_tanh")}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.MatMult, ast.Pow)):
            found.append(f"line {node.lineno}: {type(node.op).__name__}")
        elif isinstance(node, ast.Attribute) and id(node) not in hooks:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            library = isinstance(root, ast.Name) and root.id in ("np", "numpy", "math", "scipy")
            if node.attr in KERNEL_DEPENDENT and (library or node.attr == "dot"):  # np.tanh, a.dot(b)
                found.append(f"line {node.lineno}: .{node.attr}")
    assert found == []


# --- training: MKL's numerical mode (issue 30) ----------------------------------------------------------------

def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


# The settings under which a train stage must give the same checkpoint as under the pinned mode: a CPU whose best
# is AVX2, as far as one can be played here (MKL limited to AVX2; ATen's AVX2 build, which is the pin), and
# MKL_DEBUG_CPU_TYPE, which users try and this MKL (2024.2) ignores. ATEN_CPU_CAPABILITY=avx512 or default is a
# choice against the pin (the GRU trains other weights there; pipeline/learning/numerics.py).
VARIATIONS = [{}, {"ATEN_CPU_CAPABILITY": "avx2"}, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, {"MKL_DEBUG_CPU_TYPE": "5"},
              {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}]


@pytest.fixture(scope="module")
def mkl_project(tmp_path_factory) -> Path:
    """A project with one small sine, enough hidden units (16) and epochs (5) for MKL's code paths to round
    differently (its AVX-512 and AVX2 paths give other checkpoints here when the mode is not pinned)."""
    root = tmp_path_factory.mktemp("mkl")
    raw = use_datasets(tiny_params(), ["sine"])
    raw["model"]["hidden"], raw["train"]["epochs"] = 16, 5
    write_params(root, raw)
    (root / "data" / "raw").mkdir(parents=True)
    generate.run(params.parse(raw), "sine", Paths(root))
    return root


def train_in_subprocess(root: Path, model: str, env: dict[str, str]) -> tuple[bytes, str]:
    """`python -m pipeline train sine MODEL` as DVC runs it, in a fresh process (MKL reads its mode once, at
    start-up), with MKL_CBWR removed from the environment unless `env` sets it; the checkpoint and the output."""
    base = {k: v for k, v in source_env().items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY",
                                                                 "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")}
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "sine", model], cwd=root,
                          env={**base, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return (root / "data" / "models" / "sine" / f"{model}.npz").read_bytes(), done.stdout


@pytest.mark.parametrize("model", ["elman", "gru"])
def test_training_is_byte_identical_whatever_kernels_the_cpu_offers(mkl_project, model):
    reference, _ = train_in_subprocess(mkl_project, model, {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    for variation in VARIATIONS:
        checkpoint, _ = train_in_subprocess(mkl_project, model, variation)
        assert checkpoint == reference, f"{model}: another checkpoint under {variation or 'no setting'}"


@pytest.mark.skipif("avx2" not in _cpu_flags(), reason="the pin applies to CPUs with AVX2")
def test_the_pinned_mode_is_in_force_inside_the_train_stage(mkl_project):
    """The stage says which mode it ran in, a user's own setting is kept, and (on a CPU whose own choice is
    another path, AVX-512) the pin is what makes the checkpoint: without either half of it the weights differ."""
    pinned, said = train_in_subprocess(mkl_project, "gru", {})
    assert said.rstrip().endswith("on cpu (MKL_CBWR=AVX2, ATEN_CPU_CAPABILITY=avx2)"), said
    own_mkl, said = train_in_subprocess(mkl_project, "gru", {"MKL_CBWR": "AUTO"})
    assert said.rstrip().endswith("on cpu (MKL_CBWR=AUTO, ATEN_CPU_CAPABILITY=avx2)"), said
    own_aten, said = train_in_subprocess(mkl_project, "gru", {"ATEN_CPU_CAPABILITY": "avx512"})
    assert said.rstrip().endswith("on cpu (MKL_CBWR=AVX2, ATEN_CPU_CAPABILITY=avx512)"), said
    if "avx512f" in _cpu_flags():
        assert own_mkl != pinned, "MKL's own AVX-512 path gave the pinned checkpoint: this test cannot see the pin"
        assert own_aten != pinned, "ATen's AVX-512 build gave the pinned checkpoint: this test cannot see the pin"


def test_the_aten_level_is_pinned_only_where_the_cpu_has_avx2(tmp_path, monkeypatch):
    """Forcing ATen's AVX2 build on a CPU without AVX2 would stop torch with an illegal instruction."""
    from pipeline.learning import numerics

    for flags, expected in (("fpu sse2 avx avx2 fma", "avx2"), ("fpu sse2 sse4_2 avx", None)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
        numerics.pin(tmp_path / "cpuinfo")
        assert os.environ.get("ATEN_CPU_CAPABILITY") == expected
