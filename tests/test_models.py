"""Model variants: the predictor interface, the step contract, and each variant against its literal definition."""

import pytest
import torch
from torch import nn

from pipeline import models, params
from pipeline.errors import ParamsError
from pipeline.models import MODELS, Shape

NAMES = MODELS.names()
RECURRENT = ("elman", "concat", "rnn", "lstm", "gru")
B, T, H = 3, 7, 4


def make(kind: str, input_size: int = 1, output_size: int = 1, layers: int = 1, hidden: int = H,
         window: int = T, seed: int = 0) -> models.SequenceModel:
    torch.manual_seed(seed)
    model = models.build(kind, Shape(input_size=input_size, output_size=output_size, window=window,
                                     hidden=hidden, layers=layers))
    if kind == "linear":  # closed-form: give it non-trivial weights instead of the zero initialisation
        model.weight.normal_()
        model.bias.normal_()
    return model


def sample(features: int, batch: int = B, steps: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, steps, features, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_variant_and_params_agrees():
    assert set(RECURRENT) | {"persistence", "linear"} == set(NAMES)
    assert set(params.MODEL_KINDS) == set(NAMES)
    assert len(params.MODEL_KINDS) == len(set(params.MODEL_KINDS))


@pytest.mark.parametrize("features,outputs", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("kind", NAMES)
def test_predict_next_shape(kind, features, outputs):
    if kind == "persistence" and features != outputs:
        with pytest.raises(ValueError, match="same features"):
            make(kind, features, outputs)
        return
    model = make(kind, features, outputs, layers=2)
    x = sample(features)
    y = model.predict_next(x)
    assert y.shape == (B, outputs)
    assert torch.isfinite(y).all()


def test_persistence_repeats_the_last_value():
    x = sample(2)
    assert torch.equal(make("persistence", 2, 2).predict_next(x), x[:, -1])


def test_linear_predicts_from_the_flattened_window():
    model = make("linear", 2, 1)
    x = sample(2)
    expected = x.reshape(B, -1) @ model.weight.T + model.bias
    torch.testing.assert_close(model.predict_next(x), expected, rtol=0, atol=1e-6)
    with pytest.raises(NotImplementedError):
        model(x)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", NAMES)
def test_gradients_reach_every_parameter(kind, layers):
    model = make(kind, 2, 2, layers=layers)
    parameters = dict(model.named_parameters())
    if not model.trainable:
        assert not any(p.requires_grad for p in parameters.values())  # fitted in closed form, never by Adam
        return
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


def test_non_recurrent_models_are_exactly_the_baselines():
    assert {k for k in NAMES if k not in RECURRENT} == {"persistence", "linear"}
    for kind in ("persistence", "linear"):
        assert not make(kind).trainable
    for kind in RECURRENT:
        assert make(kind).trainable


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
