"""Window normalisation for training, in torch: pipeline/models/normalisation.py's formulas, op for op.

The model trains on windows in their own units and its prediction is mapped back before the loss, so losses,
early stopping and the free-running phase all read the data's (scaled) units, whatever the mode; in the
free-running phase each fed-back window is normalised by its own statistics, as the evaluate stage's rollout
does. The statistics are differentiable functions of the inputs (as in RevIN); they hold no parameters.
tests/test_normalisation.py checks this module against the numpy one.
"""

import torch

from pipeline.models.normalisation import EPS


def _real(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(..., T, F) with NaN where a right-padded window has no real value (lengths (...,))."""
    if lengths is None:
        return x
    alive = torch.arange(x.shape[-2], device=x.device) < lengths[..., None]
    return torch.where(alive[..., None], x, torch.full_like(x, float("nan")))


def _last(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(..., T, F) -> (..., 1, F): each window's last real value."""
    if lengths is None:
        return x[..., -1:, :]
    index = (lengths - 1)[..., None, None].expand(*lengths.shape, 1, x.shape[-1])
    return torch.gather(x, -2, index)


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    return torch.nanmean(x, dim=-2, keepdim=True)


def statistics(x: torch.Tensor, lengths: torch.Tensor | None, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale), each (..., 1, F), from each window's own real values."""
    real = _real(x, lengths)
    if mode == "window":
        shift = _nanmean(real)
        scale = torch.sqrt(_nanmean(torch.square(real - shift)) + EPS)
    elif mode == "window_robust":
        shift = torch.nanquantile(real, 0.5, dim=-2, keepdim=True)
        q1 = torch.nanquantile(real, 0.25, dim=-2, keepdim=True)
        q3 = torch.nanquantile(real, 0.75, dim=-2, keepdim=True)
        scale = (q3 - q1) + EPS
    elif mode == "difference":
        shift, scale = _last(x, lengths), torch.ones_like(x[..., :1, :])
    else:
        raise ValueError(f"unknown normalisation {mode!r}")
    return shift, scale


def forward(x: torch.Tensor, lengths: torch.Tensor | None, mode: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows (..., T, F) in the model's input units (padding 0), with the (shift, scale) for `inverse`."""
    shift, scale = statistics(x, lengths, mode)
    real = _real(x, lengths)
    if mode == "difference":
        z = torch.cat([torch.zeros_like(real[..., :1, :]), real[..., 1:, :] - real[..., :-1, :]], dim=-2)
    else:
        z = (real - shift) / scale
    return torch.nan_to_num(z, nan=0.0), shift, scale


def inverse(pred: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A prediction (..., F) in a window's units back to the data's."""
    return pred * scale[..., 0, :] + shift[..., 0, :]
