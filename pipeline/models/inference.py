"""The learned variants' forward pass in numpy, rebuilt from checkpoint arrays: what the evaluate stage runs.

Why: evaluation needs nothing but forward passes of small models, and importing torch costs about 1.4 s, which
each of a full run's 30 learned evaluate stages would pay again (about a seventh of `dvc repro`). The equations
are torch's own (torch.nn.RNN, GRU and LSTM documentation) and tests/test_inference.py checks every kind, one and
two layers, against its torch module. A kind with no entry in FORWARDS is evaluated through torch instead
(`evaluation.load_predictors`), so a new model needs no numpy code to work.

The same bits on every machine. A prediction is defined as the float32 rounding of the forward computed in
float64 by the EXACT kernels: `portable_matmul` and `portable_tanh` use only operations that are correctly
rounded on every CPU (multiply, add, divide, rint, ldexp), one numpy call at a time in an order fixed by the
shapes, so their bits do not depend on the CPU. BLAS's do: OpenBLAS picks kernels per CPU, which sum in their
own orders and fuse multiply-adds; so do np.tanh's, which numpy dispatches per CPU (its AVX2 version differs
from libm's in the last bit of a third of all values). The exact kernels are slow, though (many numpy calls on
tiny arrays: the sine's 1000-step rollout took 3x as long), so the forward runs in float64 on the fast kernels
(BLAS and np.tanh, behind the hooks `_matmul` and `_tanh`) and uses the exact ones only where it matters, the
way a correctly rounded libm works. The fast result differs from the exact one by round-off (3.7e-16 of the
head's scale at most, over every prediction of every replica of the default params), so wherever every number
within BAND of the fast result (9.1e-13 of that scale) rounds to the same float32, that float32 is the exact
result's rounding too; the few predictions near a float32 rounding boundary (1 in 800) are recomputed with the
exact kernels. Predictions are float32 (the data's precision and the trained weights'), and so is what the
rollout feeds back, so every prediction of a rollout reads exact inputs and nothing compounds.
tests/test_determinism.py swaps other fast kernels in through the hooks (the exact ones, a per-element
math.tanh, a tanh perturbed by 1e-13) and finds every written file byte-identical.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pipeline.files.checkpoints import Checkpoint, corrupt


# --- the portable kernels -----------------------------------------------------------------------------------

def portable_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (..., K) @ b (K, N) in float64 without BLAS: each output element is the sum of its K correctly rounded
    products a[..., k] * b[k, n], added in the order k = 0, 1, ..., K-1 (numpy's `add.reduce` over an outer axis,
    or `add.accumulate` for a single column; tests/test_inference.py checks the bits against that scalar loop).
    Nothing depends on the CPU, and nothing can fuse a multiply into an add; OpenBLAS instead picks per CPU
    kernels that sum in their own orders and fuse multiply-adds. Each element is computed on its own, so any
    batching of the rows gives the same bits."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if b.shape[0] == 1:
        return a * b[0]  # one product, no sum
    if b.shape[1] == 1:  # add.reduce would sum a lone column pairwise; a running sum keeps the k order
        return np.add.accumulate(a * b[:, 0], axis=-1)[..., -1:]
    return np.add.reduce(a[..., :, None] * b, axis=-2)


def _constant(value: float) -> np.ndarray:
    """A float64 constant as a 0-d array: numpy combines those with arrays about 3x faster than Python floats,
    which matters for the rollout's many small arrays."""
    return np.array(value, dtype=np.float64)


_LN2_HI = _constant(6.93147180369123816490e-01)  # fdlibm's split of ln 2: k * _LN2_HI is exact for |k| < 2**11
_LN2_LO = _constant(1.90821492927058770002e-10)
_INV_LN2 = _constant(1.44269504088896338700e+00)
_EXPM1_TAYLOR = tuple(_constant(1.0 / math.factorial(n)) for n in range(13, 1, -1))  # 1/13!, ..., 1/2!
_POW2 = np.ldexp(1.0, np.arange(65))  # 2^0 ... 2^64, exact
_ONE, _TWO, _HALF, _CLAMP, _K_MAX = (_constant(v) for v in (1.0, 2.0, 0.5, 22.0, 64.0))


def portable_tanh(x: np.ndarray) -> np.ndarray:
    """tanh in float64 from correctly rounded operations only, so the same bits on every CPU; within 4 units in
    the last place of libm's (tests/test_inference.py checks 200,000 values), with NaN, infinities and signed
    zeros as tanh has them.

    tanh|x| = e / (e + 2) with e = expm1(2|x|), which loses nothing to cancellation near 0. expm1(y) =
    2^k (1 + p(r)) - 1 with y = k ln 2 + r, |r| <= ln(2)/2 (Cody and Waite's reduction), and p(r) = expm1(r) by
    its Taylor series to r^13 (the next term is below 2e-17 of it). Above |x| = 22, tanh is 1.0 in float64."""
    shape = np.shape(x)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.abs(x)
    np.minimum(y, _CLAMP, out=y)  # NaN stays NaN
    y += y
    k = y * _INV_LN2
    np.fmin(k, _K_MAX, out=k)  # fmin: a NaN's k is 64, a harmless index below
    np.rint(k, out=k)
    r = k * _LN2_HI
    np.subtract(y, r, out=r)
    r -= np.multiply(k, _LN2_LO, out=y)
    p = r * _EXPM1_TAYLOR[0]
    for c in _EXPM1_TAYLOR[1:]:  # Horner: p = r (1/2! + r (1/3! + ... + r / 13!))
        p += c
        p *= r
    p *= r  # r^2 (1/2! + r/3! + ...)
    p += r  # expm1(r)
    scale = _POW2[k.astype(np.intp)]  # 2^k
    p *= scale
    scale -= _ONE  # 2^k - 1: exact up to k = 53; beyond, the result rounds to 1.0 either way
    p += scale  # expm1(2|x|)
    t = p + _TWO
    np.divide(p, t, out=t)
    return np.copysign(t, x, out=t).reshape(shape)[()]  # [()]: a number for a number, as np.tanh


class Kernels(NamedTuple):
    """The two operations every forward is made of: (..., K) @ (K, N) products and an elementwise tanh."""

    matmul: Callable[[np.ndarray, np.ndarray], np.ndarray]
    tanh: Callable[[np.ndarray], np.ndarray]


EXACT = Kernels(portable_matmul, portable_tanh)  # the definition of every prediction

# The fast path's kernels, looked up at each call: BLAS and numpy's SIMD tanh, whose last bits depend on the CPU.
# Tests swap in others (a per-element reference, a perturbed tanh) and find the predictions unchanged.
_matmul: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.matmul
_tanh: Callable[[np.ndarray], np.ndarray] = np.tanh


def fast() -> Kernels:
    return Kernels(_matmul, _tanh)


# How far a fast result may be from the exact one, relative to the head's scale (the sum of its absolute weights
# and bias, which bounds its output: hidden states lie in [-1, 1]). 2^-40 = 9.1e-13: 2,400 times the largest
# difference measured (3.7e-16, over the 67,150 test and rollout-context predictions of every replica of the
# default params' learned pairs; summing 16 products can err by about 16 x 1.1e-16), and 65,000 times below
# float32's resolution, so that 1 prediction in 800 needs the exact kernels (58 of the 48,000 measured).
BAND = math.ldexp(1.0, -40)


def sigmoid(x: np.ndarray, tanh: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return _HALF * (_ONE + tanh(_HALF * x))  # the same function as 1 / (1 + exp(-x)), without overflow


# --- the layers ---------------------------------------------------------------------------------------------

class Layer:
    """One recurrent layer: (B, T, n_in) inputs and an initial state -> (B, T, H) states, in float64 on the given
    kernels. `project`, `recur` and `step` work on the last axis only, so the same equations advance a (B, H)
    state or a (lanes, B, H) stack of them (to the same bits, with the exact kernels)."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray) -> None:
        self.w_ih_t, self.w_hh_t = (np.ascontiguousarray(np.transpose(w), dtype=np.float64) for w in (w_ih, w_hh))
        self.b_ih, self.b_hh = (np.asarray(b, dtype=np.float64) for b in (b_ih, b_hh))
        self.hidden = w_hh.shape[1]

    def project(self, x: np.ndarray, k: Kernels) -> np.ndarray:
        """The input's contribution to the gates: x W_ih^T + b_ih."""
        return k.matmul(x, self.w_ih_t) + self.b_ih

    def recur(self, h: np.ndarray, k: Kernels) -> np.ndarray:
        """The state's contribution to the gates: h W_hh^T + b_hh."""
        return k.matmul(h, self.w_hh_t) + self.b_hh

    def run(self, seq: np.ndarray, h: np.ndarray, k: Kernels, alive: np.ndarray | None = None) -> np.ndarray:
        """`alive` (B, T) bool, for right-padded rows: where False the state (and an LSTM's cell) stays as it
        was, so a row's states after its last real step repeat the one at that step (torch's masked and packed
        forwards end there too)."""
        inputs = self.project(seq, k)  # every step's input projection at once: (B, T, gates * H)
        states = np.empty(seq.shape[:2] + (self.hidden,))
        c = np.zeros_like(h)
        for t in range(seq.shape[1]):
            if alive is None:
                h, c = self.step(inputs[:, t], self.recur(h, k), h, c, k)
            else:
                keep = alive[:, t, None]
                new_h, new_c = self.step(inputs[:, t], self.recur(h, k), h, c, k)
                h, c = np.where(keep, new_h, h), np.where(keep, new_c, c)
            states[:, t] = h
        return states

    def step(self, gi: np.ndarray, gh: np.ndarray, h: np.ndarray, c: np.ndarray, k: Kernels
             ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class TanhLayer(Layer):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh): torch.nn.RNN, and the elman and concat cells."""

    def step(self, gi, gh, h, c, k):
        return k.tanh(gh + gi), c


class GRULayer(Layer):
    """Gates in torch's order r, z, n; n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h."""

    def step(self, gi, gh, h, c, k):
        H = self.hidden
        rz = sigmoid(gi[..., :2 * H] + gh[..., :2 * H], k.tanh)  # r and z in one call
        r, z = rz[..., :H], rz[..., H:]
        n = k.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
        return (_ONE - z) * n + z * h, c


class LSTMLayer(Layer):
    """Gates in torch's order i, f, g, o; c' = f c + i g, h' = o tanh(c')."""

    def __init__(self, *weights: np.ndarray) -> None:
        super().__init__(*weights)
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh call serves all four gates, with the same bits as four
        # (halving is exact)
        self.half = np.repeat([0.5, 0.5, 1.0, 0.5], self.hidden)

    def step(self, gi, gh, h, c, k):
        H = self.hidden
        t = k.tanh((gi + gh) * self.half)
        i, f, g, o = (t[..., j * H:(j + 1) * H] for j in range(4))
        i, f, o = (_HALF * (_ONE + s) for s in (i, f, o))
        c = f * c + i * g
        return o * k.tanh(c), c


class NumpyRecurrent:
    """Stacked layers and a linear head on the last step's state: `predict_next` (B, T, F) -> (B, F_out) float32,
    and `rollout`, the same predictions fed back for many steps. Both give the float32 rounding of the exact
    kernels' result (`predict_exact`), computed mostly on the fast ones (see the module's docstring)."""

    def __init__(self, layers: list[Layer], initial: list[np.ndarray | None], head: tuple[np.ndarray, np.ndarray]):
        self.layers = layers
        self.initial = [None if h0 is None else np.asarray(h0, dtype=np.float64) for h0 in initial]
        self.head_w_t = np.ascontiguousarray(np.transpose(head[0]), dtype=np.float64)
        self.head_b = np.asarray(head[1], dtype=np.float64)
        self.band = BAND * (np.abs(self.head_w_t).sum(axis=0) + np.abs(self.head_b))  # (F_out,)

    def _start(self, layer: Layer, h0: np.ndarray | None, batch: int) -> np.ndarray:
        return np.zeros((batch, layer.hidden)) if h0 is None else np.repeat(h0, batch, axis=0)

    def _head(self, h: np.ndarray, k: Kernels) -> np.ndarray:
        """The prediction from the last layer's state, in float64."""
        return k.matmul(h, self.head_w_t) + self.head_b

    def forward(self, x: np.ndarray, k: Kernels, lengths: np.ndarray | None = None) -> np.ndarray:
        """(B, T, F) windows -> (B, F_out) predictions in float64, unrounded, on the kernels k; with `lengths`
        (B,), right-padded windows masked after each one's end, so each prediction is its own last real step's."""
        seq = np.asarray(x, dtype=np.float64)
        alive = None if lengths is None else np.arange(seq.shape[1])[None, :] < np.asarray(lengths)[:, None]
        for layer, h0 in zip(self.layers, self.initial):
            seq = layer.run(seq, self._start(layer, h0, len(seq)), k, alive)
        return self._head(seq[:, -1], k)

    def predict_exact(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """The definition of a prediction: the exact kernels' result, rounded to float32."""
        return self.forward(x, EXACT, lengths).astype(np.float32)

    def _unsettled(self, fast_result: np.ndarray) -> np.ndarray:
        """Where a number within `band` of the fast result could round to another float32 (where the exact
        result's rounding is not known without computing it); NaN and infinities too."""
        return (fast_result - self.band).astype(np.float32) != (fast_result + self.band).astype(np.float32)

    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """(B, T, F) -> (B, F_out) float32; with `lengths` (B,), from each right-padded row's last real step."""
        x = np.asarray(x, dtype=np.float64)
        fast_result = self.forward(x, fast(), lengths)
        out = fast_result.astype(np.float32)
        rows = np.flatnonzero(self._unsettled(fast_result).any(axis=1))
        if len(rows) and lengths is None:
            out[rows] = self.predict_exact(x[rows])
        elif len(rows):
            out[rows] = self.predict_exact(x[rows], np.asarray(lengths)[rows])
        return out

    def rollout(self, context: np.ndarray, steps: int) -> np.ndarray:
        """Free-running prediction, (B, T, F) context -> (B, steps, F) float32: step k predicts from the last T
        values (context, then its own float32 predictions) from a fresh initial state, exactly as `predict_next`
        would, with the same bits (tests/test_inference.py checks it against predict_next slid one step at a
        time, and against `predict_exact`).

        The fast kernels roll out first; then every unsettled prediction (about 1 in 1000) is recomputed from its
        window with the exact kernels, and in the rare case that its float32 differs, the rollout resumes from
        the corrected value (each prediction reads only the T values before it)."""
        ctx = np.asarray(context, dtype=np.float32)
        batch, window = ctx.shape[:2]
        values = np.empty((batch, window + steps, ctx.shape[2]), np.float32)  # the context, then the predictions
        values[:, :window] = ctx
        done = 0  # values[:, window:window + done] hold the exact kernels' predictions
        while done < steps:
            fast_results = self._fast_rollout(values, window, done)  # fills values[:, window + done:]
            resume = None
            unsettled = self._unsettled(fast_results).any(axis=2)
            for i in np.flatnonzero(unsettled.any(axis=1)):
                rows, at = np.flatnonzero(unsettled[i]), window + done + i
                exact = self.predict_exact(values[rows, at - window:at])
                changed = (exact.view(np.int32) != values[rows, at].view(np.int32)).any()
                values[rows, at] = exact
                if changed:  # later predictions read a value that was wrong: roll out again after it
                    resume = done + i + 1
                    break
            if resume is None:
                break
            done = resume
        return values[:, window:].copy()

    def _fast_rollout(self, values: np.ndarray, window: int, done: int) -> np.ndarray:
        """Roll out on the fast kernels from the T = `window` values values[:, done:done + T], writing the float32
        predictions into values[:, T + done:] and returning them unrounded, (steps - done, B, F) float64.

        Why not call `predict_next` once per step: that runs T cell steps for every value predicted. Here the T
        windows in flight advance together instead. Window k starts (from the initial state) at step k and
        reads one value per step; after T values it is complete, gives the prediction, and its slot starts the
        next window. So each step costs one cell step on a (T, B) stack of states."""
        k = fast()
        batch, steps = len(values), values.shape[1] - window - done
        first = self.layers[0]
        context_inputs = first.project(values[:, done:done + window].astype(np.float64), k)
        starts = [self._start(layer, h0, batch) for layer, h0 in zip(self.layers, self.initial)]
        h = [np.zeros((window, batch, layer.hidden)) for layer in self.layers]
        c = [np.zeros_like(states) for states in h]
        cells = [isinstance(layer, LSTMLayer) for layer in self.layers]  # only an LSTM's cell state needs a reset
        b_hh = [np.broadcast_to(layer.b_hh, (window, batch, len(layer.b_hh))).copy() for layer in self.layers]
        results = np.empty((steps, batch, len(self.head_b)))
        for s in range(window - 1 + steps):
            lane = s % window  # the window that starts with this step's value
            for i, start in enumerate(starts):
                h[i][lane] = start
                if cells[i]:
                    c[i][lane] = 0.0
            if s < window:
                gi = context_inputs[:, s]
            else:
                gi = first.project(values[:, done + s].astype(np.float64), k)
            for i, layer in enumerate(self.layers):
                if i:
                    gi = layer.project(h[i - 1], k)
                gh = k.matmul(h[i], layer.w_hh_t)
                np.add(gh, b_hh[i], out=gh)  # layer.recur's sum; adding same-shape arrays is the fast way
                h[i], c[i] = layer.step(gi, gh, h[i], c[i], k)
            if s >= window - 1:  # the window that started T - 1 steps ago has read its T values
                j = s - window + 1
                results[j] = self._head(h[-1][(s + 1) % window], k)
                values[:, window + done + j] = results[j]
        return results


class _Arrays:
    """Checkpoint arrays taken one by one with their expected shapes; whatever is left over is an error too."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.left = {name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()}

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self.left.pop(name)  # KeyError: a weight is missing
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
        return array

    def done(self) -> None:
        if self.left:
            raise ValueError(f"unexpected arrays {sorted(self.left)}")


def _torch_cells(layer_type: type[Layer], gates: int) -> Callable[[Checkpoint, _Arrays], NumpyRecurrent]:
    """torch.nn.RNN / GRU / LSTM inside models.TorchRecurrent: rnn.weight_ih_l0, ..., head.weight, head.bias."""

    def build(checkpoint: Checkpoint, arrays: _Arrays) -> NumpyRecurrent:
        s, layers = checkpoint.shape, []
        for layer in range(s.layers):
            n_in = s.input_size if layer == 0 else s.hidden
            layers.append(layer_type(arrays.take(f"rnn.weight_ih_l{layer}", (gates * s.hidden, n_in)),
                                     arrays.take(f"rnn.weight_hh_l{layer}", (gates * s.hidden, s.hidden)),
                                     arrays.take(f"rnn.bias_ih_l{layer}", (gates * s.hidden,)),
                                     arrays.take(f"rnn.bias_hh_l{layer}", (gates * s.hidden,))))
        head = arrays.take("head.weight", (s.output_size, s.hidden)), arrays.take("head.bias", (s.output_size,))
        return NumpyRecurrent(layers, [None] * s.layers, head)

    return build


def _elman(checkpoint: Checkpoint, arrays: _Arrays) -> NumpyRecurrent:
    s, layers = checkpoint.shape, []
    h0 = arrays.take("h0", (s.layers, 1, s.hidden))
    for layer in range(s.layers):
        n_in = s.input_size if layer == 0 else s.hidden
        layers.append(TanhLayer(arrays.take(f"Wxh.{layer}.weight", (s.hidden, n_in)),
                                arrays.take(f"Whh.{layer}.weight", (s.hidden, s.hidden)),
                                arrays.take(f"Wxh.{layer}.bias", (s.hidden,)),
                                arrays.take(f"Whh.{layer}.bias", (s.hidden,))))
    head = arrays.take("Why.weight", (s.output_size, s.hidden)), arrays.take("Why.bias", (s.output_size,))
    return NumpyRecurrent(layers, list(h0), head)


def _concat(checkpoint: Checkpoint, arrays: _Arrays) -> NumpyRecurrent:
    s, layers = checkpoint.shape, []
    for layer in range(s.layers):
        n_in = s.input_size if layer == 0 else s.hidden
        weight = arrays.take(f"i2h.{layer}.weight", (s.hidden, n_in + s.hidden))
        layers.append(TanhLayer(weight[:, :n_in], weight[:, n_in:], arrays.take(f"i2h.{layer}.bias", (s.hidden,)),
                                np.zeros(s.hidden, np.float32)))
    head = arrays.take("h2o.weight", (s.output_size, s.hidden)), arrays.take("h2o.bias", (s.output_size,))
    return NumpyRecurrent(layers, [None] * s.layers, head)


FORWARDS: dict[str, Callable[[Checkpoint, _Arrays], NumpyRecurrent]] = {
    "elman": _elman, "concat": _concat, "rnn": _torch_cells(TanhLayer, 1), "gru": _torch_cells(GRULayer, 3),
    "lstm": _torch_cells(LSTMLayer, 4)}


def restore(checkpoint: Checkpoint, replica: int = 0) -> NumpyRecurrent:
    """The numpy forward of one replica of a learned model's checkpoint (its kind must be in FORWARDS); every
    weight must be there with its shape, and nothing else."""
    try:
        arrays = _Arrays(checkpoint.replicas[replica])
        model = FORWARDS[checkpoint.kind](checkpoint, arrays)
        arrays.done()
    except Exception as exc:
        raise corrupt(checkpoint.path, exc) from None
    return model
