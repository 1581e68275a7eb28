"""Baselines that every learned model is shown beside: closed-form predictors written in numpy.

`persistence` predicts that the next value equals the last one; `mean` predicts the training targets' mean;
`linear` is an autoregression on the whole window fitted by least squares on the training split. All go through the same train and evaluate stages and
so appear in every metrics file, leaderboard and plot. They need no torch, so their stages start as fast as
Python does.

Both give the same bits on every CPU: `linear` is fitted by `portable_lstsq` (below) and predicts through
inference's portable product (in float64, unrounded), neither of which uses BLAS or LAPACK, whose kernels
OpenBLAS picks per CPU.
"""

import numpy as np

from pipeline.models import inference
from pipeline.files.checkpoints import Checkpoint, Shape, corrupt
from pipeline.registry import Registry

# Directions of the training windows whose singular value is below this fraction of the largest are dropped from
# the least-squares fit. The windows are float32 data (precision 6e-8), so such directions are the data's rounding,
# not signal: a pure sine's windows span 2 dimensions (plus the bias column), and its other singular values are
# 1e-8 to 3e-8 of the largest, as are the rounding directions of every dataset here; the weakest real direction,
# sincos's (4 frequencies, 8 dimensions), is at 5e-6. Fitting the rounding directions amplified them 1e8-fold,
# which made the solution depend on the CPU's kernels in its 9th digit.
RCOND = 1e-6
_SWEEPS = 60  # Jacobi sweeps at most; 6 to 12 converge every training set here


def _columns_sum(a: np.ndarray) -> np.ndarray:
    """Sums down the rows of a 2-D array by numpy's add.reduce: row by row, or for a single column numpy's pairwise
    summation; an order fixed by the shape either way, never by the CPU, and no BLAS."""
    return np.add.reduce(a, axis=0)


def _householder_r(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R and the first n rows of Q^T b for A = QR (A m x n, m > n), by Householder reflections computed one numpy
    call at a time (no LAPACK): min |Ax - b| has the same solutions as min |Rx - Q^T b|."""
    m, n = a.shape
    work = np.concatenate([a, b], axis=1)  # the reflections act on b's columns too
    for k in range(n):
        x = work[k:, k]
        norm = np.sqrt(_columns_sum(x[:, None] * x[:, None])[0])
        if norm == 0.0:
            continue
        v = x.copy()
        v[0] += np.copysign(norm, x[0])  # reflect x onto -sign(x0) |x| e1, which cancels nothing
        w = _columns_sum(v[:, None] * work[k:, k:])  # v^T (rows k.., columns k..)
        w *= 2.0 / _columns_sum(v[:, None] * v[:, None])[0]
        work[k:, k:] -= v[:, None] * w
    return np.triu(work[:n, :n]), work[:n, n:]


def _round_robin(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairings of n (even) columns in n - 1 rounds, each column once per round and each pair once overall."""
    order, rounds = list(range(n)), []
    for _ in range(n - 1):
        rounds.append((np.array(order[:n // 2]), np.array(order[::-1][:n // 2])))
        order = [order[0], order[-1], *order[1:-1]]
    return rounds


def _jacobi(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W = A V with orthogonal columns and V orthogonal: one-sided Jacobi (Hestenes), each round rotating n / 2
    disjoint column pairs at once. Returns (W, V); the singular values are the column norms of W."""
    m, n = a.shape
    pad = n % 2
    w = np.concatenate([a, np.zeros((m, pad))], axis=1)  # a zero column never rotates
    v = np.eye(n + pad)
    rounds = _round_robin(n + pad)
    eps = np.finfo(np.float64).eps
    for _ in range(_SWEEPS):
        rotated = False
        for i, j in rounds:
            wi, wj = w[:, i], w[:, j]
            alpha, beta, gamma = (_columns_sum(p * q) for p, q in ((wi, wi), (wj, wj), (wi, wj)))
            turn = np.abs(gamma) > eps * np.sqrt(alpha * beta)
            zeta = (beta - alpha) / (2.0 * np.where(turn, gamma, 1.0))
            # |zeta| > 1e150: one column is 1e-150 of the other, numerically zero (and dropped by rcond): a
            # rotation by 1 / (2 zeta) would change nothing
            turn &= np.abs(zeta) < 1e150
            if not turn.any():
                continue
            rotated = True
            zeta = np.where(turn, zeta, 0.0)
            t = np.copysign(1.0, zeta) / (np.abs(zeta) + np.sqrt(1.0 + zeta * zeta))
            c = np.where(turn, 1.0 / np.sqrt(1.0 + t * t), 1.0)
            s = np.where(turn, c * t, 0.0)
            w[:, i], w[:, j] = c * wi - s * wj, s * wi + c * wj
            vi, vj = v[:, i], v[:, j]
            v[:, i], v[:, j] = c * vi - s * vj, s * vi + c * vj
        if not rotated:
            break
    return w[:, :n], v[:n, :n]


def portable_lstsq(a: np.ndarray, b: np.ndarray, rcond: float = RCOND) -> np.ndarray:
    """The minimum-norm least-squares solution x of A x = b (A m x n, b m x k), dropping the directions of A whose
    singular value is below `rcond` of the largest (what np.linalg.lstsq(a, b, rcond) computes), in float64.

    Built from numpy calls that are correctly rounded (multiply, add, divide, sqrt) or sum in an order fixed by
    the shapes (add.reduce), in a fixed sequence: Householder QR to an n x n problem, then one-sided Jacobi for
    its singular value decomposition. So the bits of x, and the rank decision, are the same on every CPU;
    LAPACK's, through OpenBLAS's per-CPU kernels, are not."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    if a.shape[0] > a.shape[1]:
        a, b = _householder_r(a, b)
    w, v = _jacobi(a)
    sigma2 = _columns_sum(w * w)  # squared singular values
    sigma = np.sqrt(sigma2)
    keep = sigma > rcond * sigma.max()
    x = np.zeros((a.shape[1], b.shape[1]))
    for j in np.flatnonzero(keep):  # x = sum over kept j of v_j (w_j . b) / sigma_j^2, in column order
        x += v[:, j, None] * (_columns_sum(w[:, j, None] * b) / sigma2[j])
    return x[:, 0] if vector else x


def right_aligned(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Right-padded windows (B, T, F) of these real lengths (B,) moved to end at step T - 1, zeros before their
    start: step T - 1 - j of every row is then its j-th value before its end, whatever its length."""
    steps = x.shape[1]
    source = np.arange(steps)[None, :] - (steps - np.asarray(lengths))[:, None]  # (B, T): where each step comes from
    moved = np.take_along_axis(x, np.maximum(source, 0)[..., None], axis=1)
    return np.where((source >= 0)[..., None], moved, np.zeros((), x.dtype))


class Baseline:
    """Fitted once by `fit(x, y)` on scaled data; predicts with `predict_next(x)`: (B, T, F) -> (B, F_out). Both
    take `lengths` (B,) for right-padded windows of different real lengths (None: every window is full)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape

    def fit(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Nothing to fit unless a subclass says otherwise."""

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """The fitted values, to be saved in the checkpoint."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")


BASELINES: Registry = Registry("model")


@BASELINES.register("persistence")
class Persistence(Baseline):
    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        if shape.output_size != shape.input_size:
            raise ValueError("persistence needs targets with the same features as the inputs")

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Each window's last real value."""
        if lengths is None:
            return x[:, -1]
        return x[np.arange(len(x)), np.asarray(lengths) - 1]


@BASELINES.register("mean")
class Mean(Baseline):
    """The training targets' mean, whatever the window: the reference where the last value means nothing (the
    adding problem's target is a sum of two marked values, whose mean costs MSE 1/6), and the floor any model
    that learned something from its inputs must beat."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.value = np.zeros(shape.output_size)

    def fit(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """In float64, summed in an order the shape fixes (no BLAS): the same bits on every CPU."""
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self.value = _columns_sum(y) / len(y)

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        return np.broadcast_to(self.value, (len(x), len(self.value))).copy()

    def state(self) -> dict[str, np.ndarray]:
        return {"value": self.value}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if {name: a.shape for name, a in arrays.items()} != {"value": self.value.shape}:
            raise ValueError(f"expected arrays {{'value': {self.value.shape}}}")
        self.value = np.asarray(arrays["value"], dtype=np.float64)


@BASELINES.register("linear")
class LinearAR(Baseline):
    """y = W vec(window) + b, in float64.

    Windows of different lengths are right-aligned (`right_aligned`) for fitting and predicting alike: weight
    column j then always reads the j-th value before a window's end, an autoregression on each window's last
    T values (T the longest), and the steps before a shorter window's start read 0, the training mean on the
    scaled data, i.e. no information. Left as padded, a column would read a value at another distance from the
    end in each row (or padding), which is no autoregression at all."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        self.weight = np.zeros((shape.output_size, shape.window * shape.input_size))
        self.bias = np.zeros(shape.output_size)

    def fit(self, x: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None) -> None:
        """Least squares in float64: the minimum-norm solution over the directions the float32 windows resolve
        (RCOND), the same bits on every machine (windows of a pure sine span only two dimensions, so the system
        is rank-deficient: the rank decision must not depend on the CPU either)."""
        x = x if lengths is None else right_aligned(x, lengths)
        design = np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1).astype(np.float64)
        solution = portable_lstsq(design, np.asarray(y, dtype=np.float64))  # (T*F + 1, F_out)
        self.weight, self.bias = solution[:-1].T.copy(), solution[-1].copy()

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        x = x if lengths is None else right_aligned(np.asarray(x), lengths)
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)  # the exact product: cheap for one layer
        return inference.portable_matmul(flat, np.ascontiguousarray(self.weight.T)) + self.bias

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        expected = {"weight": self.weight.shape, "bias": self.bias.shape}
        if {name: a.shape for name, a in arrays.items()} != expected:
            raise ValueError(f"expected arrays {expected}")
        self.weight, self.bias = (np.asarray(arrays[name], dtype=np.float64) for name in ("weight", "bias"))


def build(kind: str, shape: Shape) -> Baseline:
    return BASELINES.get(kind, "models")(shape)


def restore(checkpoint: Checkpoint) -> Baseline:
    """The fitted baseline a checkpoint holds."""
    try:
        model = build(checkpoint.kind, checkpoint.shape)
        if len(checkpoint.replicas) != 1:
            raise ValueError("a baseline is one deterministic fit")
        model.load_state(checkpoint.replicas[0])
    except Exception as exc:
        raise corrupt(checkpoint.path, exc) from None
    return model
