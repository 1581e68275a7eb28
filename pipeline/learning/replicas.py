"""R replicas of one learned model, trained as one network: their weights sit block-diagonally in a single
recurrent layer that torch's fused kernel (the one nn.RNN/GRU/LSTM run) advances in one call per batch.

Why: one replica of a tiny model spends its time in per-call overhead, not arithmetic, so R replicas in turn cost
almost R times one. Laid side by side in a hidden state of R*H units, with every cross-replica weight held at
exactly zero, they cost one call of a slightly larger kernel. The replicas stay independent: replica r reads only
its own slice of the input (its own batch, in its own order), the zero blocks are not parameters (they are built
from the per-replica weights on each forward), so no gradient ever reaches them, and every loss, clip and
early-stopping decision is per replica (fitting.fit).

Each replica starts from exactly the weights a single run with its seed would build (`torch.manual_seed(seed)`,
then `models.build`), and the weights come back out under the single model's names, so checkpoints, the numpy
forward (inference.py) and `models.restore` see ordinary models. With one replica every tensor the kernel sees is
the single model's own, so `replicas: 1` trains exactly as a single model does (tests/test_training.py checks
the bits).

Windows of different lengths (right-padded, `predict_next(x, members, lengths)`) give each replica's row its own
length. elman and concat then mask, side by side: a replica's slice of the state stays where its sequence ended.
torch's cells are packed (pack_padded_sequence, as nn.RNN/GRU/LSTM take variable lengths), which needs one length
per row, so each replica runs alone there: the same kernel call a single model makes.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.learning import models, normalisation
from pipeline.files.checkpoints import Shape

GATES = {"elman": 1, "concat": 1, "rnn": 1, "gru": 3, "lstm": 4}
# torch runs an LSTM on the CPU through oneDNN, which is already efficient for one replica and becomes
# compute-bound on R times the block-diagonal work over long windows, so LSTM replicas take turns there; every
# other kind, and the LSTM over short windows, is dominated by per-call overhead and trains every replica in one
# call. Measured for one training step (forward and backward) at hidden 16, batch 64, 1 thread, ms for 1 / 5
# replicas side by side: lstm 1.1 / 2.5 over 5 steps, 1.4 / 5.8 over 15, 3.1 / 11.0 over 32, 3.0 / 16.6 over 50,
# 4.8 / 31.0 over 100 (five turns: 24); gru 2.8 / 7.3 over 15 and 16.9 / 43.2 over 100; rnn 1.8 / 3.2 and
# 5.8 / 14.0 (benchmarks: `make bench`, replicas section).
LSTM_SIDE_BY_SIDE_STEPS = 32
MASKED = ("elman", "concat")  # with lengths: masked side by side; the other kinds are packed, one replica at a time
KERNELS = {"elman": torch.rnn_tanh, "concat": torch.rnn_tanh, "rnn": torch.rnn_tanh, "gru": torch.gru,
           "lstm": torch.lstm}


def group_size(kind: str, steps: int, replicas: int) -> int:
    """How many replicas share one kernel call for windows of `steps` steps (see the measurements above)."""
    if kind == "lstm" and steps > LSTM_SIDE_BY_SIDE_STEPS:
        return 1
    return max(replicas, 1)


def block_diagonal(weight: torch.Tensor, gates: int) -> torch.Tensor:
    """(R, G*H, n) per-replica weights -> (G*R*H, R*n): gate g of replica r lands at rows g*R*H + r*H and
    columns r*n, every other entry an exact zero. The layout torch's kernels expect for R*H hidden units."""
    replicas, rows, n = weight.shape
    if replicas == 1:
        return weight[0]  # one replica is the single model itself: no copy, no zeros
    hidden = rows // gates
    eye = torch.eye(replicas, dtype=weight.dtype, device=weight.device)
    full = torch.einsum("rghn,rs->grhsn", weight.reshape(replicas, gates, hidden, n), eye)
    return full.reshape(gates * replicas * hidden, replicas * n)


def gate_major(bias: torch.Tensor, gates: int) -> torch.Tensor:
    """(R, G*H) per-replica biases -> (G*R*H,), in the row order of `block_diagonal`."""
    replicas, rows = bias.shape
    if replicas == 1:
        return bias[0]
    return bias.reshape(replicas, gates, rows // gates).transpose(0, 1).reshape(-1)


def side_by_side(x: torch.Tensor) -> torch.Tensor:
    """(R, B, T, F) -> (B, T, R*F): each replica's input in its own slice of the features."""
    replicas, batch, steps, features = x.shape
    return x.permute(1, 2, 0, 3).reshape(batch, steps, replicas * features)


class ReplicaStack(nn.Module):
    """R models of one kind and shape; `predict_next(x)` maps (R, B, T, F) inputs to (R, B, F_out)."""

    def __init__(self, kind: str, shape: Shape, seeds: Sequence[int], forget_bias: float | None = None,
                 normalise: str = "none") -> None:
        super().__init__()
        if kind not in GATES:
            raise ValueError(f"no replica stack for model kind '{kind}'")
        members = []
        for seed in seeds:
            torch.manual_seed(seed)  # exactly the initialisation a single run with this seed gets
            members.append(models.build(kind, shape))
            if forget_bias is not None:
                models.set_forget_bias(members[-1], forget_bias)
        self.kind, self.shape, self.seeds = kind, shape, list(seeds)
        self.normalise = normalise  # each window in its own units (normalisation.py); the weights do not change
        self.names = [name for name, _ in members[0].named_parameters()]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in members]))
            for name in self.names)

    @property
    def replicas(self) -> int:
        return len(self.seeds)

    def named(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.weights))

    def parameters_per_replica(self) -> int:
        return sum(w[0].numel() for w in self.weights)

    def state_arrays(self, replica: int) -> dict[str, np.ndarray]:
        """One replica's weights under the single model's names, as numpy arrays on the CPU."""
        return {name: w[replica].detach().cpu().numpy() for name, w in self.named().items()}

    def _layers(self, group: slice | list[int]
                ) -> tuple[list[tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """Per layer (W_ih, W_hh, b_ih, b_hh), each with a leading replica axis; the head; elman's h0; for the
        replicas in `group`."""
        w, s = {name: weight[group] for name, weight in self.named().items()}, self.shape
        if self.kind == "elman":
            layers = [(w[f"Wxh.{i}.weight"], w[f"Whh.{i}.weight"], w[f"Wxh.{i}.bias"], w[f"Whh.{i}.bias"])
                      for i in range(s.layers)]
            return layers, (w["Why.weight"], w["Why.bias"]), w["h0"]
        if self.kind == "concat":
            layers = []
            for i in range(s.layers):
                weight, n_in = w[f"i2h.{i}.weight"], (s.input_size if i == 0 else s.hidden)
                layers.append((weight[:, :, :n_in], weight[:, :, n_in:], w[f"i2h.{i}.bias"],
                               torch.zeros_like(w[f"i2h.{i}.bias"])))
            return layers, (w["h2o.weight"], w["h2o.bias"]), None
        layers = [tuple(w[f"rnn.{p}_l{i}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                  for i in range(s.layers)]
        return layers, (w["head.weight"], w["head.bias"]), None

    def _groups(self, members: Sequence[int] | None, inputs: int, steps: int, alone: bool = False
                ) -> list[tuple[slice, slice | list[int]]]:
        """The replicas in `members` (default: all, in order) cut into the groups that share a kernel call: for
        each, its rows of the (M, ...) inputs and its replicas (a slice where contiguous). `alone`: one each."""
        members = list(range(self.replicas)) if members is None else list(members)
        if len(members) != inputs:
            raise ValueError(f"{inputs} inputs for {len(members)} replicas")
        size = 1 if alone else group_size(self.kind, steps, len(members))
        groups = []
        for start in range(0, len(members), size):
            chosen = members[start:start + size]
            contiguous = chosen == list(range(chosen[0], chosen[-1] + 1))
            groups.append((slice(start, start + len(chosen)), slice(chosen[0], chosen[-1] + 1) if contiguous
                           else chosen))
        return groups

    def forward(self, x: torch.Tensor, members: Sequence[int] | None = None) -> torch.Tensor:
        """(M, B, T, F) -> (M, B, T, F_out): every step's prediction, as SequenceModel's forward gives it, for the
        M replicas in `members` (default: all of them, in order). Training passes only the replicas still
        training, so a stopped replica costs nothing: the others no longer carry it through every kernel call."""
        outputs = [self._forward(x[rows], group) for rows, group in self._groups(members, x.shape[0], x.shape[2])]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _weights(self, group: slice | list[int], replicas: int, batch: int, like: torch.Tensor
                 ) -> tuple[list[torch.Tensor], torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The kernel's flat block-diagonal weights, its initial state (layers, B, R*H) and the head's weight
        and bias, for the replicas in `group`."""
        gates, hidden, n_layers = GATES[self.kind], self.shape.hidden, self.shape.layers
        layers, (head_w, head_b), h0 = self._layers(group)
        flat = []
        for w_ih, w_hh, b_ih, b_hh in layers:
            flat += [block_diagonal(w_ih, gates), block_diagonal(w_hh, gates), gate_major(b_ih, gates),
                     gate_major(b_hh, gates)]
        if h0 is None:
            h = like.new_zeros(n_layers, batch, replicas * hidden)
        else:  # (R, layers, 1, H) -> (layers, B, R*H)
            h = h0.permute(1, 2, 0, 3).expand(n_layers, batch, replicas, hidden).reshape(n_layers, batch, -1)
        return flat, h, (block_diagonal(head_w, 1), gate_major(head_b, 1))

    def _forward(self, x: torch.Tensor, group: slice | list[int]) -> torch.Tensor:
        replicas, batch, steps, _ = x.shape
        n_layers = self.shape.layers
        flat, h, head = self._weights(group, replicas, batch, x)
        inputs = side_by_side(x)
        if self.kind == "lstm":
            seq = KERNELS["lstm"](inputs, [h, torch.zeros_like(h)], flat, True, n_layers, 0.0, self.training,
                                  False, True)[0]
        else:
            seq = KERNELS[self.kind](inputs, h.contiguous(), flat, True, n_layers, 0.0, self.training, False,
                                     True)[0]
        out = nn.functional.linear(seq, *head)  # (B, T, R*F_out)
        return out.reshape(batch, steps, replicas, -1).permute(2, 0, 1, 3)

    def _masked_last(self, x: torch.Tensor, group: slice | list[int], lengths: torch.Tensor) -> torch.Tensor:
        """elman/concat over right-padded rows: (M, B, T, F) and lengths (M, B) -> (M, B, F_out), each from its
        row's last real step; replica r's slice of the state is frozen after its own row's end."""
        replicas, batch, steps, _ = x.shape
        flat, h, head = self._weights(group, replicas, batch, x)
        alive = models.alive_steps(lengths.reshape(-1), steps).reshape(replicas, batch, steps)
        alive = alive.permute(1, 2, 0).repeat_interleave(self.shape.hidden, dim=2)  # (B, T, R*H)
        _, h = models.masked_tanh_rnn(side_by_side(x), h, flat, self.shape.layers, alive)
        out = nn.functional.linear(h[-1], *head)  # (B, R*F_out)
        return out.reshape(batch, replicas, -1).transpose(0, 1)

    def _packed_last(self, x: torch.Tensor, group: slice | list[int], lengths: torch.Tensor) -> torch.Tensor:
        """rnn/gru/lstm over right-padded rows, one replica: (1, B, T, F) and lengths (1, B) -> (1, B, F_out), from
        each row's final state of the packed batch, as nn.RNN/GRU/LSTM compute it."""
        _, batch, _, _ = x.shape
        flat, h, head = self._weights(group, 1, batch, x)
        packed = pack_padded_sequence(x[0], lengths[0].cpu(), batch_first=True, enforce_sorted=False)
        hx = [h, torch.zeros_like(h)] if self.kind == "lstm" else h  # zeros: the rows' order does not matter
        final = KERNELS[self.kind](packed.data, packed.batch_sizes, hx, flat, True, self.shape.layers, 0.0,
                                   self.training, False)[1]  # (layers, B, H), in the packed (sorted) order
        return nn.functional.linear(final[-1][packed.unsorted_indices], *head)[None]

    def predict_next(self, x: torch.Tensor, members: Sequence[int] | None = None,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(M, B, T, F) -> (M, B, F_out); with `lengths` (M, B), from each row's own last real step. Under a
        window normalisation the windows go in in their own units and the predictions come back in the data's."""
        if self.normalise == "none":
            return self._predict_next(x, members, lengths)
        z, shift, scale = normalisation.forward(x, lengths, self.normalise)
        return normalisation.inverse(self._predict_next(z, members, lengths), shift, scale)

    def _predict_next(self, x: torch.Tensor, members: Sequence[int] | None = None,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return self(x, members)[:, :, -1]
        masked = self.kind in MASKED
        run = self._masked_last if masked else self._packed_last
        outputs = [run(x[rows], group, lengths[rows])
                   for rows, group in self._groups(members, x.shape[0], x.shape[2], alone=not masked)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
