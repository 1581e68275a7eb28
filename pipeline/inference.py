"""The learned variants' forward pass in numpy, rebuilt from checkpoint arrays: what the evaluate stage runs.

Why: evaluation needs nothing but forward passes of small models, and importing torch costs about 1.4 s, which
each of a full run's 30 learned evaluate stages would pay again (about a seventh of `dvc repro`). The equations
are torch's own (torch.nn.RNN, GRU and LSTM documentation) and tests/test_inference.py checks every kind, one and
two layers, against its torch module. A kind with no entry in FORWARDS is evaluated through torch instead
(`evaluation.load_predictor`), so a new model needs no numpy code to work.
"""

from collections.abc import Callable

import numpy as np

from pipeline.checkpoints import Checkpoint, corrupt


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the same function as 1 / (1 + exp(-x)), without overflow


class Layer:
    """One recurrent layer: (B, T, n_in) inputs and an initial state -> (B, T, H) states. `step` works on the last
    axis only, so the same equations advance a (B, H) state or a (lanes, B, H) stack of them."""

    def __init__(self, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray) -> None:
        self.w_ih_t, self.w_hh_t, self.b_ih, self.b_hh = w_ih.T.copy(), w_hh.T.copy(), b_ih, b_hh
        self.hidden = w_hh.shape[1]

    def run(self, seq: np.ndarray, h: np.ndarray) -> np.ndarray:
        inputs = seq @ self.w_ih_t + self.b_ih  # every step's input projection at once: (B, T, gates * H)
        states = np.empty(seq.shape[:2] + (self.hidden,), dtype=np.float32)
        c = np.zeros_like(h)
        for t in range(seq.shape[1]):
            h, c = self.step(inputs[:, t], h @ self.w_hh_t + self.b_hh, h, c)
            states[:, t] = h
        return states

    def step(self, gi: np.ndarray, gh: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class TanhLayer(Layer):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh): torch.nn.RNN, and the elman and concat cells."""

    def step(self, gi, gh, h, c):
        return np.tanh(np.add(gh, gi, out=gh)), c  # gh is always a fresh buffer of the caller's


class GRULayer(Layer):
    """Gates in torch's order r, z, n; n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h."""

    def step(self, gi, gh, h, c):
        i_r, i_z, i_n = np.split(gi, 3, axis=-1)
        h_r, h_z, h_n = np.split(gh, 3, axis=-1)
        r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
        n = np.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, c


class LSTMLayer(Layer):
    """Gates in torch's order i, f, g, o; c' = f c + i g, h' = o tanh(c')."""

    def step(self, gi, gh, h, c):
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c


class NumpyRecurrent:
    """Stacked layers and a linear head on the last step's state: `predict_next` (B, T, F) -> (B, F_out), and
    `rollout`, the same predictions fed back for many steps."""

    def __init__(self, layers: list[Layer], initial: list[np.ndarray | None], head: tuple[np.ndarray, np.ndarray]):
        self.layers, self.initial, (self.head_w, self.head_b) = layers, initial, head

    def _start(self, layer: Layer, h0: np.ndarray | None, batch: int) -> np.ndarray:
        return np.zeros((batch, layer.hidden), np.float32) if h0 is None else np.repeat(h0, batch, axis=0)

    def predict_next(self, x: np.ndarray) -> np.ndarray:
        seq = np.asarray(x, dtype=np.float32)
        for layer, h0 in zip(self.layers, self.initial):
            seq = layer.run(seq, self._start(layer, h0, len(seq)))
        return seq[:, -1] @ self.head_w.T + self.head_b

    def rollout(self, context: np.ndarray, steps: int) -> np.ndarray:
        """Free-running prediction, (B, T, F) context -> (B, steps, F): step k predicts from the last T values
        (context, then its own predictions) from a fresh initial state, exactly as `predict_next` would.

        Why not call `predict_next` once per step: that runs T cell steps for every value predicted. Here the T
        windows in flight advance together instead. Window k starts (from the initial state) at step k and
        reads one value per step; after T values it is complete, gives the prediction, and its slot starts the
        next window. So each step costs one cell step on a (T, B) stack of states, and every window computes
        what `predict_next` computes, in the same order: for one layer the predictions come out equal to the bit
        here; a deeper layer's input projection is batched differently, which moves its float32 round-off
        (tests/test_inference.py checks both against predict_next, slid one step at a time)."""
        ctx = np.asarray(context, dtype=np.float32)
        batch, window = ctx.shape[:2]
        first = self.layers[0]
        context_inputs = ctx @ first.w_ih_t + first.b_ih  # the context's input projection, as predict_next does
        starts = [self._start(layer, h0, batch) for layer, h0 in zip(self.layers, self.initial)]
        h = [np.zeros((window, batch, layer.hidden), np.float32) for layer in self.layers]
        c = [np.zeros_like(states) for states in h]
        cells = [isinstance(layer, LSTMLayer) for layer in self.layers]  # only an LSTM's cell state needs a reset
        b_ih = np.broadcast_to(first.b_ih, (batch, len(first.b_ih))).copy()  # same-shape adds are the fast ones
        b_hh = [np.broadcast_to(layer.b_hh, (window, batch, len(layer.b_hh))).copy() for layer in self.layers]
        head_t, head_b = self.head_w.T.copy(), np.broadcast_to(self.head_b, (batch, len(self.head_b))).copy()
        out = np.empty((steps, batch, len(self.head_b)), np.float32)
        for s in range(window - 1 + steps):
            lane = s % window  # the window that starts with this step's value
            for i, start in enumerate(starts):
                h[i][lane] = start
                if cells[i]:
                    c[i][lane] = 0.0
            if s < window:
                gi = context_inputs[:, s]
            else:
                gi = np.matmul(out[s - window], first.w_ih_t)
                np.add(gi, b_ih, out=gi)
            for i, layer in enumerate(self.layers):
                if i:
                    gi = h[i - 1] @ layer.w_ih_t + layer.b_ih
                gh = np.matmul(h[i], layer.w_hh_t)
                h[i], c[i] = layer.step(gi, np.add(gh, b_hh[i], out=gh), h[i], c[i])
            if s >= window - 1:  # the window that started T - 1 steps ago has read its T values
                prediction = out[s - window + 1]
                np.matmul(h[-1][(s + 1) % window], head_t, out=prediction)
                np.add(prediction, head_b, out=prediction)
        return np.ascontiguousarray(out.transpose(1, 0, 2))


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


def restore(checkpoint: Checkpoint) -> NumpyRecurrent:
    """The numpy forward of a learned model's checkpoint (its kind must be in FORWARDS); every weight must be
    there with its shape, and nothing else."""
    try:
        arrays = _Arrays(checkpoint.arrays)
        model = FORWARDS[checkpoint.kind](checkpoint, arrays)
        arrays.done()
    except Exception as exc:
        raise corrupt(checkpoint.path, exc) from None
    return model
