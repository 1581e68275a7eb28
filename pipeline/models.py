"""Model variants of the reference notebooks, registered by the names used in params.yaml `models:`.

Every variant predicts the next value from a window: `predict_next(x)` maps (B, T, F) to (B, F_out), which is
all that training, evaluation and rollout use. Recurrent variants also honour the step contract
`forward(x, h=None) -> (y, h)` with y (B, T, F_out) the prediction after each step, so a sequence can be
processed in pieces with its state carried over. Baselines (persistence, linear) live in baselines.py and
register into the same MODELS registry.
"""

import dataclasses

import torch
from torch import nn

from pipeline.registry import Registry


@dataclasses.dataclass(frozen=True)
class Shape:
    """Everything needed to rebuild a model; saved in every checkpoint."""

    input_size: int
    output_size: int
    window: int
    hidden: int
    layers: int


class SequenceModel(nn.Module):
    """Base class. `trainable = False` marks closed-form models, fitted by `fit(x, y)` instead of gradients."""

    trainable = True

    def predict_next(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self(x)  # (B, T, F_out)
        return y[:, -1]


MODELS: Registry = Registry("model")


def build(kind: str, shape: Shape) -> SequenceModel:
    return MODELS.get(kind, "models")(shape)


@MODELS.register("elman")
class Elman(SequenceModel):
    """Seed 000's SimpleRNN written out: h_t = tanh(Wxh x_t + Whh h_{t-1}), y_t = Why h_t, with a learnable
    initial state h0 that is used in training *and* prediction (seed 000 predicted from zeros instead).
    Layers stack as in torch.nn.RNN: layer l reads the states of layer l - 1."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.Wxh = nn.ModuleList(nn.Linear(shape.input_size if i == 0 else shape.hidden, shape.hidden)
                                 for i in range(shape.layers))
        self.Whh = nn.ModuleList(nn.Linear(shape.hidden, shape.hidden) for _ in range(shape.layers))
        self.Why = nn.Linear(shape.hidden, shape.output_size)
        self.h0 = nn.Parameter(torch.rand(shape.layers, 1, shape.hidden))  # seed 000: torch.rand([1, hidden])

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        h = self.h0.expand(-1, batch, -1) if h is None else h  # (layers, B, H)
        states, seq = [], x
        for layer, (wxh, whh) in enumerate(zip(self.Wxh, self.Whh)):
            inputs = wxh(seq)  # (B, T, H): the input projection of every step at once
            state, outputs = h[layer], []
            for t in range(seq.shape[1]):
                state = torch.tanh(inputs[:, t] + whh(state))  # (B, H)
                outputs.append(state)
            seq = torch.stack(outputs, dim=1)  # (B, T, H)
            states.append(state)
        return self.Why(seq), torch.stack(states)


@MODELS.register("concat")
class Concat(SequenceModel):
    """Seeds 002/003: one linear map over the concatenation, h_t = tanh(W [x_t, h_{t-1}] + b), y_t = Wo h_t,
    from a zero initial state. W is applied in two slices so the input part runs over all steps at once;
    the arithmetic is the same as concatenating at every step."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.hidden = shape.hidden
        self.i2h = nn.ModuleList(nn.Linear((shape.input_size if i == 0 else shape.hidden) + shape.hidden,
                                           shape.hidden) for i in range(shape.layers))
        self.h2o = nn.Linear(shape.hidden, shape.output_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        if h is None:
            h = x.new_zeros(len(self.i2h), batch, self.hidden)
        states, seq = [], x
        for layer, i2h in enumerate(self.i2h):
            n_in = seq.shape[-1]
            inputs = nn.functional.linear(seq, i2h.weight[:, :n_in], i2h.bias)  # (B, T, H)
            w_state = i2h.weight[:, n_in:]  # (H, H)
            state, outputs = h[layer], []
            for t in range(seq.shape[1]):
                state = torch.tanh(inputs[:, t] + state @ w_state.T)  # (B, H)
                outputs.append(state)
            seq = torch.stack(outputs, dim=1)
            states.append(state)
        return self.h2o(seq), torch.stack(states)


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


# Baselines register themselves into MODELS; importing them here makes every name resolve through one registry.
from pipeline import baselines as _baselines  # noqa: E402,F401
