"""Model variants: the predictor interface, the step contract, and each variant against its literal definition."""

import pytest
import torch
from torch import nn

from pipeline import params
from pipeline.models import baselines
from pipeline.learning import models
from pipeline.errors import ParamsError
from pipeline.learning.models import MODELS, Shape

NAMES = MODELS.names()
RECURRENT = ("elman", "concat", "rnn", "lstm", "gru")
B, T, H = 3, 7, 4


def make(kind: str, input_size: int = 1, output_size: int = 1, layers: int = 1, hidden: int = H,
         window: int = T, seed: int = 0) -> models.SequenceModel:
    torch.manual_seed(seed)
    model = models.build(kind, Shape(input_size=input_size, output_size=output_size, window=window,
                                     hidden=hidden, layers=layers))
    return model


def sample(features: int, batch: int = B, steps: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, steps, features, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_variant_and_params_agrees():
    assert set(RECURRENT) == set(NAMES)
    assert set(baselines.BASELINES.names()) == {"persistence", "mean", "linear"}
    assert set(params.MODEL_KINDS) == set(NAMES) | set(baselines.BASELINES.names())
    assert len(params.MODEL_KINDS) == len(set(params.MODEL_KINDS))


@pytest.mark.parametrize("features,outputs", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("kind", NAMES)
def test_predict_next_shape(kind, features, outputs):
    model = make(kind, features, outputs, layers=2)
    x = sample(features)
    y = model.predict_next(x)
    assert y.shape == (B, outputs)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", NAMES)
def test_gradients_reach_every_parameter(kind, layers):
    model = make(kind, 2, 2, layers=layers)
    parameters = dict(model.named_parameters())
    assert parameters
    loss = nn.functional.mse_loss(model.predict_next(sample(2)), torch.ones(B, 2))
    loss.backward()
    for name, p in parameters.items():
        assert p.grad is not None, f"{kind}: no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{kind}: the gradient of {name} is zero"


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", RECURRENT)
def test_step_contract_and_state_carry(kind, layers):
    model = make(kind, 2, 3, layers=layers)
    x = sample(2, steps=10)
    with torch.no_grad():
        y, h = model(x)
        assert y.shape == (B, 10, 3)
        states = h if isinstance(h, tuple) else (h,)  # an LSTM carries (h, c)
        for s in states:
            assert s.shape == (layers, B, H)
        torch.testing.assert_close(model.predict_next(x), y[:, -1], rtol=0, atol=1e-6)
        for split in (1, 4, 9):
            y1, h1 = model(x[:, :split])
            y2, h2 = model(x[:, split:], h1)
            torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=0, atol=1e-6)
            for a, b in zip(h2 if isinstance(h2, tuple) else (h2,), states):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _torch_rnn_like(elman: models.Elman, features: int, layers: int) -> nn.RNN:
    rnn = nn.RNN(features, H, layers, batch_first=True)
    with torch.no_grad():
        for layer in range(layers):
            getattr(rnn, f"weight_ih_l{layer}").copy_(elman.Wxh[layer].weight)
            getattr(rnn, f"bias_ih_l{layer}").copy_(elman.Wxh[layer].bias)
            getattr(rnn, f"weight_hh_l{layer}").copy_(elman.Whh[layer].weight)
            getattr(rnn, f"bias_hh_l{layer}").copy_(elman.Whh[layer].bias)
    return rnn


@pytest.mark.parametrize("layers", [1, 2])
def test_elman_equals_torch_rnn(layers):
    elman = make("elman", 2, 1, layers=layers)
    rnn = _torch_rnn_like(elman, 2, layers)
    x = sample(2, steps=12)
    h0 = torch.zeros(layers, B, H)
    with torch.no_grad():
        y, h = elman(x, h0)
        out, h_ref = rnn(x, h0)
        torch.testing.assert_close(y, elman.Why(out), rtol=0, atol=1e-6)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
        # The same with a non-zero carried state: both must read it the same way.
        h_start = torch.randn(layers, B, H, generator=torch.Generator().manual_seed(5))
        y, h = elman(x, h_start)
        out, h_ref = rnn(x, h_start)
        torch.testing.assert_close(y, elman.Why(out), rtol=0, atol=1e-6)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
        # With h0 zeroed, the default (h=None) path is nn.RNN from zeros.
        elman.h0.zero_()
        torch.testing.assert_close(elman.predict_next(x), elman.Why(rnn(x)[0])[:, -1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_concat_equals_the_concatenation_formula(layers):
    model = make("concat", 2, 3, layers=layers)
    x = sample(2, steps=9)
    h_start = torch.randn(layers, B, H, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for initial in (None, h_start):
            seq, finals = x, []
            for layer, i2h in enumerate(model.i2h):
                h = torch.zeros(B, H) if initial is None else initial[layer]
                outputs = []
                for t in range(seq.shape[1]):
                    h = torch.tanh(torch.cat([seq[:, t], h], dim=-1) @ i2h.weight.T + i2h.bias)
                    outputs.append(h)
                seq = torch.stack(outputs, dim=1)
                finals.append(h)
            expected = seq @ model.h2o.weight.T + model.h2o.bias
            y, h = model(x, initial)
            torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(h, torch.stack(finals), rtol=0, atol=1e-6)


def _elman_step_by_step(model: models.Elman, x: torch.Tensor) -> torch.Tensor:
    """Seed 000's loop: one call of the cell per time step, from the learned h0."""
    seq = x
    for layer, (wxh, whh) in enumerate(zip(model.Wxh, model.Whh)):
        h, outputs = model.h0[layer].expand(len(x), -1), []
        for t in range(seq.shape[1]):
            h = torch.tanh(wxh(seq[:, t]) + whh(h))
            outputs.append(h)
        seq = torch.stack(outputs, dim=1)
    return model.Why(seq)


def _concat_step_by_step(model: models.Concat, x: torch.Tensor) -> torch.Tensor:
    """Seed 002's loop: concatenate input and state at every step, from zeros."""
    seq = x
    for i2h in model.i2h:
        h, outputs = torch.zeros(len(x), H), []
        for t in range(seq.shape[1]):
            h = torch.tanh(i2h(torch.cat([seq[:, t], h], dim=-1)))
            outputs.append(h)
        seq = torch.stack(outputs, dim=1)
    return model.h2o(seq)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind, literal", [("elman", _elman_step_by_step), ("concat", _concat_step_by_step)])
def test_fused_cells_equal_their_step_by_step_loops_with_gradients(kind, literal, layers):
    """The scratch cells run in torch's fused tanh-RNN kernel; outputs and every gradient must equal those of
    the cell written out one step at a time, as the notebooks do (to float32 round-off)."""
    model = make(kind, 2, 2, layers=layers)
    x = sample(2, steps=20)
    target = torch.randn(B, 20, 2, generator=torch.Generator().manual_seed(3))
    grads = []
    for forward in (lambda: model(x)[0], lambda: literal(model, x)):
        model.zero_grad()
        y = forward()
        nn.functional.mse_loss(y, target).backward()
        grads.append((y.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (fused, fused_grads), (loop, loop_grads) = grads
    torch.testing.assert_close(fused, loop, rtol=0, atol=1e-6)
    assert fused_grads.keys() == loop_grads.keys()
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], loop_grads[name], rtol=1e-5, atol=1e-6, msg=name)
        assert loop_grads[name].abs().sum() > 0, name


def test_elman_h0_is_a_trained_parameter():
    model = make("elman", 1, 1, layers=2)
    assert isinstance(model.h0, nn.Parameter)
    assert model.h0.requires_grad
    assert any(p is model.h0 for p in model.parameters())  # so the optimizer updates it
    assert "h0" in model.state_dict()  # and checkpoints keep it
    loss = nn.functional.mse_loss(model.predict_next(sample(1)), torch.zeros(B, 1))
    loss.backward()
    assert model.h0.grad is not None
    assert model.h0.grad.abs().sum() > 0
    before = model.h0.detach().clone()
    torch.optim.Adam(model.parameters(), lr=0.01).step()
    assert not torch.equal(model.h0.detach(), before)


def test_elman_predicts_from_h0_not_from_zeros():
    model = make("elman", 1, 1)
    x = sample(1, steps=3)
    with torch.no_grad():
        model.h0.fill_(0.5)
        from_h0 = model.predict_next(x)
        torch.testing.assert_close(from_h0, model(x, model.h0.expand(-1, B, -1).clone())[0][:, -1],
                                   rtol=0, atol=1e-7)
        assert not torch.allclose(from_h0, model(x, torch.zeros(1, B, H))[0][:, -1], atol=1e-4)
        model.h0.fill_(-0.5)
        assert not torch.allclose(model.predict_next(x), from_h0, atol=1e-4)


def test_unknown_model_kind_lists_the_choices():
    with pytest.raises(ParamsError) as info:
        models.build("transformer", Shape(1, 1, T, H, 1))
    message = info.value.message
    assert "transformer" in message
    for name in NAMES:
        assert name in message


def test_unknown_model_kind_in_params_yaml(tmp_path):
    from conftest import tiny_params, write_params

    raw = tiny_params()
    raw["models"] = {"mine": {"kind": "transformer"}}
    with pytest.raises(ParamsError) as info:
        params.load(write_params(tmp_path, raw))
    message = info.value.message
    assert "models.mine.kind" in message and "transformer" in message
    for name in NAMES:
        assert name in message


# --- windows of different lengths: padded batches -----------------------------------------------------------

LENGTHS = (7, 3, 1, 5, 7, 2)  # real lengths of right-padded windows of T steps


def grown(model: nn.Module, factor: float = 2.0) -> nn.Module:
    """Weights of a trained size, not the tiny initial ones, so that every step and gate matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


def padded(features: int, lengths=LENGTHS, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows padded with noise, not zeros, past each real length: a prediction that read padding would
    differ from the window alone."""
    return sample(features, batch=len(lengths), steps=T, seed=seed), torch.tensor(lengths)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", RECURRENT)
def test_padded_batch_predicts_what_each_sequence_alone_predicts(kind, layers):
    model = grown(make(kind, 2, 3, layers=layers)).eval()
    x, lengths = padded(2)
    with torch.no_grad():
        together = model.predict_next(x, lengths)
        alone = torch.cat([model.predict_next(x[i:i + 1, :n]) for i, n in enumerate(LENGTHS)])
        unaware = model.predict_next(x)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    assert (together - unaware).abs().max() > 1e-2  # the padding would change the short rows: the test has teeth


def replica_model(stack, replica: int) -> models.SequenceModel:
    """The single model a replica of a stack is, built from its weights."""
    model = models.build(stack.kind, stack.shape)
    model.load_state_dict({name: torch.from_numpy(a) for name, a in stack.state_arrays(replica).items()})
    return model.eval()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", RECURRENT)
def test_replica_stack_predicts_each_padded_window_as_its_replica_alone(kind, layers):
    """Training's network: each replica's rows have their own lengths (their own batch order), so a row's
    length differs between replicas; every prediction must still be its replica's, from its own window alone."""
    from pipeline.learning.replicas import ReplicaStack

    stack = grown(ReplicaStack(kind, Shape(2, 3, T, H, layers), [0, 1, 2])).eval()
    lengths = torch.tensor([[7, 3, 1, 5], [2, 7, 6, 1], [4, 4, 7, 3]])  # (replicas, batch)
    x = torch.randn(3, 4, T, 2, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        together = stack.predict_next(x, lengths=lengths)
        some = stack.predict_next(x[[2, 0]], [2, 0], lengths[[2, 0]])  # a subset, out of order (stopped replicas)
        for r in range(3):
            model = replica_model(stack, r)
            alone = torch.cat([model.predict_next(x[r, b:b + 1, :n]) for b, n in enumerate(lengths[r].tolist())])
            torch.testing.assert_close(together[r], alone, rtol=0, atol=1e-6)
        unaware = stack.predict_next(x)
    torch.testing.assert_close(some, together[[2, 0]], rtol=0, atol=1e-6)
    assert (together - unaware).abs().max() > 1e-2


@pytest.mark.parametrize("kind", RECURRENT)
def test_gradients_of_a_padded_batch_reach_every_replica_weight_and_skip_the_padding(kind):
    """Training on padded windows: every weight gets a gradient, and the padding gets none (it is never read)."""
    from pipeline.learning.replicas import ReplicaStack

    stack = ReplicaStack(kind, Shape(1, 1, T, H, 2), [0, 1])
    lengths = torch.tensor([[7, 2, 4], [3, 7, 1]])
    x = torch.randn(2, 3, T, 1, generator=torch.Generator().manual_seed(8), requires_grad=True)
    stack.predict_next(x, lengths=lengths).pow(2).sum().backward()
    for weight, name in zip(stack.weights, stack.names):
        per_replica = weight.grad.abs().reshape(2, -1).sum(dim=1)
        assert (per_replica > 0).all(), name
    for r in range(2):
        for b, n in enumerate(lengths[r].tolist()):
            assert x.grad[r, b, n:].abs().sum() == 0 and x.grad[r, b, n - 1].abs().sum() > 0
