"""Model variants of the reference notebooks, registered by the names used in params.yaml `models:`.

Every variant predicts the next value from a window: `predict_next(x)` maps (B, T, F) to (B, F_out), which is
all that training, evaluation and rollout use. `predict_next(x, lengths)` does the same for right-padded windows
of different real lengths (B,): each row's prediction comes from its own last real step, exactly as if it ran
alone at its length; torch's cells pack the batch (pack_padded_sequence), elman and concat mask it (a row's
state stays where its sequence ended). Recurrent variants also honour the step contract
`forward(x, h=None) -> (y, h)` with y (B, T, F_out) the prediction after each step, so a sequence can be
processed in pieces with its state carried over. The baselines (persistence, linear) are numpy code in
baselines.py, so that their stages never import torch.
"""

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.files.checkpoints import Checkpoint, Shape, corrupt
from pipeline.registry import Registry

__all__ = ["MODELS", "SequenceModel", "Shape", "build", "restore", "state_arrays", "NumpyPredictor"]


class SequenceModel(nn.Module):
    """Base class of the learned variants."""

    def predict_next(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) -> (B, F_out); with `lengths` (B,), from each row's last real step. The hand-written cells
        mask, so their last step's output is the one at each row's end."""
        if lengths is None:
            y, _ = self(x)  # (B, T, F_out)
        else:
            y, _ = self(x, lengths=lengths)
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


def alive_steps(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps, 1) mask of the real (not padding) steps of right-padded rows with these lengths (B,)."""
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None])[..., None]


def masked_tanh_rnn(x: torch.Tensor, h: torch.Tensor, weights: list[torch.Tensor], layers: int,
                    alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_tanh_rnn` over right-padded rows, one step at a time: where `alive` (B, T, U: U 1 or the state's
    units) is False, every layer keeps its state, so after a row's last real step its state, and the output
    read from it, stay what that row alone would end with. Why masking and not packing: the replica network
    (replicas.py) gives each replica's slice of a row its own length, which a packed batch cannot express."""
    states = list(h.unbind(0))
    outputs = []
    for t in range(x.shape[1]):
        value, keep = x[:, t], alive[:, t]
        for layer in range(layers):
            w_ih, w_hh, b_ih, b_hh = weights[4 * layer:4 * layer + 4]
            new = torch.tanh(nn.functional.linear(value, w_ih, b_ih) + nn.functional.linear(states[layer], w_hh, b_hh))
            states[layer] = value = torch.where(keep, new, states[layer])
        outputs.append(value)
    return torch.stack(outputs, dim=1), torch.stack(states)


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

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.h0.expand(-1, x.shape[0], -1) if h is None else h  # (layers, B, H)
        weights = [w for wxh, whh in zip(self.Wxh, self.Whh) for w in (wxh.weight, whh.weight, wxh.bias, whh.bias)]
        if lengths is None:
            seq, h = _tanh_rnn(x, h, weights, len(self.Wxh), self.training)
        else:
            seq, h = masked_tanh_rnn(x, h, weights, len(self.Wxh), alive_steps(lengths, x.shape[1]))
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

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if h is None:
            h = x.new_zeros(len(self.i2h), x.shape[0], self.hidden)
        weights = []
        for i2h in self.i2h:
            n_in = i2h.in_features - self.hidden
            weights += [i2h.weight[:, :n_in], i2h.weight[:, n_in:], i2h.bias, self.no_bias]
        if lengths is None:
            seq, h = _tanh_rnn(x, h, weights, len(self.i2h), self.training)
        else:
            seq, h = masked_tanh_rnn(x, h, weights, len(self.i2h), alive_steps(lengths, x.shape[1]))
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

    def predict_next(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """With `lengths`, the batch is packed (seed 003's pack_padded_sequence), so the cell never reads a
        padding step, and the prediction comes from each row's final state (torch returns it in the rows'
        original order)."""
        if lengths is None:
            return super().predict_next(x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        h = h[0] if isinstance(h, tuple) else h  # an LSTM's (h, c)
        return self.head(h[-1])


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
    def predict_next(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """(B, T, F) -> (B, F_out); with `lengths` (B,), each row's prediction from its own last real step."""
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        if lengths is None:
            return torch.cat([self.model.predict_next(xb) for xb in x.split(self.batch_size)]).cpu().numpy()
        lengths = torch.from_numpy(np.asarray(lengths, dtype=np.int64)).to(self.device)
        return torch.cat([self.model.predict_next(xb, lb) for xb, lb in
                          zip(x.split(self.batch_size), lengths.split(self.batch_size))]).cpu().numpy()
