"""Model variants of the reference notebooks, registered by the names used in params.yaml `models:`.

Every variant predicts the next value from a window: `predict_next(x)` maps (B, T, F) to (B, F_out), which is
all that training, evaluation and rollout use. Recurrent variants also honour the step contract
`forward(x, h=None) -> (y, h)` with y (B, T, F_out) the prediction after each step, so a sequence can be
processed in pieces with its state carried over. The baselines (persistence, linear) are numpy code in
baselines.py, so that their stages never import torch.
"""

import numpy as np
import torch
from torch import nn

from pipeline.files.checkpoints import Checkpoint, Shape, corrupt
from pipeline.registry import Registry

__all__ = ["MODELS", "SequenceModel", "Shape", "build", "restore", "state_arrays", "NumpyPredictor"]


class SequenceModel(nn.Module):
    """Base class of the learned variants."""

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self(x)  # (B, T, F_out)
        return y[:, -1]


MODELS: Registry = Registry("model")


def build(kind: str, shape: Shape) -> SequenceModel:
    return MODELS.get(kind, "models")(shape)


# torch orders an LSTM's gates (input, forget, cell, output) and a GRU's (reset, update, new) in its weight and
# bias rows; the gate that keeps the old state is the second in both.
KEEP_GATE = 1


@torch.no_grad()
def set_forget_bias(model: SequenceModel, value: float) -> None:
    """Start the gate that keeps the old state at bias `value` in every layer: an LSTM's forget gate, a GRU's
    update gate (h' = (1 - z) n + z h). b_ih's rows of that gate become `value` and b_hh's 0, so the gate's total
    bias is `value`. A high value (1 to 3) keeps the state from the first update on, so gradients reach far
    back before the model learns what to forget (Gers et al. 2000; Jozefowicz et al. 2015); measured here on
    memory_long, where it turns most stuck replicas into solved ones (README). Draws no random numbers, so
    every other weight is the one `build` made."""
    rnn = getattr(model, "rnn", None)
    if not isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise ValueError(f"forget_bias applies to LSTM and GRU models, not {type(model).__name__}")
    rows = slice(KEEP_GATE * rnn.hidden_size, (KEEP_GATE + 1) * rnn.hidden_size)
    for layer in range(rnn.num_layers):
        getattr(rnn, f"bias_ih_l{layer}")[rows] = value
        getattr(rnn, f"bias_hh_l{layer}")[rows] = 0.0


def _tanh_rnn(x: torch.Tensor, h: torch.Tensor, weights: list[torch.Tensor], layers: int,
              training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) over every step and layer, in torch's fused kernel (the
    one nn.RNN runs), so a hand-parameterised cell trains as fast as nn.RNN. `weights` holds
    [W_ih, W_hh, b_ih, b_hh] per layer; tests check the result against the cell written out step by step."""
    return torch.rnn_tanh(x, h.contiguous(), weights, True, layers, 0.0, training, False, True)


@MODELS.register("elman")
class Elman(SequenceModel):
    """Seed 000's SimpleRNN: h_t = tanh(Wxh x_t + Whh h_{t-1}) (each Linear with its bias), y_t = Why h_t, with a
    learnable initial state h0 that is used in training *and* prediction (seed 000 predicted from zeros instead).
    Layers stack as in torch.nn.RNN: layer l reads the states of layer l - 1."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.Wxh = nn.ModuleList(nn.Linear(shape.input_size if i == 0 else shape.hidden, shape.hidden)
                                 for i in range(shape.layers))
        self.Whh = nn.ModuleList(nn.Linear(shape.hidden, shape.hidden) for _ in range(shape.layers))
        self.Why = nn.Linear(shape.hidden, shape.output_size)
        self.h0 = nn.Parameter(torch.rand(shape.layers, 1, shape.hidden))  # seed 000: torch.rand([1, hidden])

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.h0.expand(-1, x.shape[0], -1) if h is None else h  # (layers, B, H)
        weights = [w for wxh, whh in zip(self.Wxh, self.Whh) for w in (wxh.weight, whh.weight, wxh.bias, whh.bias)]
        seq, h = _tanh_rnn(x, h, weights, len(self.Wxh), self.training)
        return self.Why(seq), h


@MODELS.register("concat")
class Concat(SequenceModel):
    """Seeds 002/003: one linear map over the concatenation, h_t = tanh(W [x_t, h_{t-1}] + b), y_t = Wo h_t,
    from a zero initial state. W [x, h] is W[:, :n_in] x + W[:, n_in:] h, so the cell runs in the fused tanh-RNN
    kernel with W's two slices as its input and state weights and a zero second bias."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.hidden = shape.hidden
        self.i2h = nn.ModuleList(nn.Linear((shape.input_size if i == 0 else shape.hidden) + shape.hidden,
                                           shape.hidden) for i in range(shape.layers))
        self.h2o = nn.Linear(shape.hidden, shape.output_size)
        self.register_buffer("no_bias", torch.zeros(shape.hidden), persistent=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if h is None:
            h = x.new_zeros(len(self.i2h), x.shape[0], self.hidden)
        weights = []
        for i2h in self.i2h:
            n_in = i2h.in_features - self.hidden
            weights += [i2h.weight[:, :n_in], i2h.weight[:, n_in:], i2h.bias, self.no_bias]
        seq, h = _tanh_rnn(x, h, weights, len(self.i2h), self.training)
        return self.h2o(seq), h


class TorchRecurrent(SequenceModel):
    """torch.nn.RNN / LSTM / GRU (seeds 001, 003, 004) with a linear head on every step's output."""

    cells = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cell: str, shape: Shape) -> None:
        super().__init__()
        self.rnn = self.cells[cell](shape.input_size, shape.hidden, shape.layers, batch_first=True)
        self.head = nn.Linear(shape.hidden, shape.output_size)

    def forward(self, x: torch.Tensor, h=None):
        out, h = self.rnn(x, h)  # out (B, T, H); h (layers, B, H), or a (h, c) pair for an LSTM
        return self.head(out), h


for _cell in TorchRecurrent.cells:
    MODELS.register(_cell)(lambda shape, cell=_cell: TorchRecurrent(cell, shape))


def state_arrays(model: SequenceModel) -> dict[str, np.ndarray]:
    """The weights as numpy arrays on the CPU, for `checkpoints.save`."""
    return {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}


def restore(checkpoint: Checkpoint, device: torch.device, replica: int = 0) -> SequenceModel:
    """Rebuild one replica of the model a checkpoint holds; every weight must be there with its shape (strict
    loading), so a damaged file never leaves a randomly initialised layer behind."""
    try:
        model = build(checkpoint.kind, checkpoint.shape)
        model.load_state_dict({name: torch.from_numpy(a) for name, a in checkpoint.replicas[replica].items()})
    except Exception as exc:
        raise corrupt(checkpoint.path, exc) from None
    return model.to(device)


class NumpyPredictor:
    """A trained model behind the numpy interface that evaluation uses: (B, T, F) array -> (B, F_out) array.

    Batches of at most `batch_size` windows go to the model's device under no_grad; the rollout calls it once
    per step with every held-out sequence at once."""

    def __init__(self, model: SequenceModel, batch_size: int = 4096) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.batch_size = batch_size

    @torch.no_grad()
    def predict_next(self, x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return torch.cat([self.model.predict_next(xb) for xb in x.split(self.batch_size)]).cpu().numpy()
