"""Every registered model (timm-style): builds with defaults, runs forward and backward on a tiny input."""

from __future__ import annotations

import pytest
import torch

from repropipe.models import MODELS, build_model, load_all_models

load_all_models()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(n for n, s in MODELS.items() if s.example is not None))
def test_every_model_runs_forward_and_backward(name, device):
    torch.manual_seed(0)
    model = build_model(name).to(device)
    inputs = _to(MODELS[name].example(), device)
    out = _tensors(model(*inputs))
    assert out and all(torch.isfinite(t).all() for t in out if t.is_floating_point())
    sum(t.float().sum() for t in out if t.is_floating_point() and t.requires_grad).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, f"{name} has no trainable parameters"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
