"""WGAN-GP training through the shared loop: n_dis critic steps and one generator step per loop step.

Each loop batch holds ``n_dis * batch_size`` real images; the critic takes one step on each of
its ``n_dis`` slices (loss_D + gp_scale * loss_GP), then the generator takes one step. The loop
checkpoints G, D, both optimisers, the RNG states and the position in the data, so a killed run
resumes where it stopped. Sample grids from a fixed latent batch are written every
``sample_every`` steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from repropipe.gan.config import ModelConfig, TrainConfig
from repropipe.gan.losses import loss_D, loss_G, loss_GP
from repropipe.io import torch_load

log = logging.getLogger("repropipe.gan")


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the generator's tanh range)."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def model_dir(models: str | os.PathLike[str], model: ModelConfig) -> Path:
    """The run folder of ``model`` under the models output: checkpoints, dvclive curves, sample grids."""
    return Path(models) / model.generator


def build_models(model: ModelConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    from repropipe.gan import models as _gan_models  # noqa: F401  (registers the generator and critic)
    from repropipe.models import build_model

    G = build_model(model.generator, nz=model.nz, ngf=model.ngf)
    D = build_model(model.critic, ndf=model.ndf)
    return G, D


def make_step(G: torch.nn.Module, D: torch.nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
              *, nz: int, n_dis: int, gp_scale: float, device: torch.device,
              precision: Any = None) -> Callable[[torch.Tensor], dict[str, float]]:
    """The step_fn for :func:`repropipe.training.fit`.

    Under a reduced ``precision`` the networks run under autocast; the losses and the gradient
    penalty (a second-order term, sensitive to rounding) are computed in float32.
    """
    from repropipe.training import Precision

    amp = precision or Precision("32", device)

    def step(batch: torch.Tensor) -> dict[str, float]:
        G.train(), D.train()
        real = to_float(batch.to(device, non_blocking=True))
        sums = {"loss_D": 0.0, "loss_GP": 0.0, "wasserstein": 0.0}
        chunks = real.chunk(n_dis)
        for x_real in chunks:
            z = torch.randn(x_real.shape[0], nz, device=device)
            with torch.no_grad(), amp.autocast():
                x_fake = G(z).float()
            with amp.autocast():
                d_real, d_fake = D(x_real).float(), D(x_fake).float()
            ld = loss_D(d_fake, d_real)
            gp = loss_GP(x_fake, x_real, D)
            opt_D.zero_grad(set_to_none=True)
            amp.backward(ld + gp_scale * gp)
            amp.step(opt_D)
            sums["loss_D"] += float(ld.detach())
            sums["loss_GP"] += float(gp.detach())
            sums["wasserstein"] += float(-ld.detach())
        z = torch.randn(chunks[0].shape[0], nz, device=device)
        with amp.autocast():
            d_gen = D(G(z)).float()
        lg = loss_G(d_gen)
        opt_G.zero_grad(set_to_none=True)
        amp.backward(lg)
        amp.step(opt_G)
        out = {k: v / len(chunks) for k, v in sums.items()}
        out["loss_G"] = float(lg.detach())
        return out

    return step


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int = 8) -> Path:
    """uint8 or [-1, 1] float images [n, 3, H, W] as one PNG grid, written atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    from repropipe.io import atomic_path

    if images.dtype != torch.uint8:
        images = to_uint8(images)
    grid = make_grid(images.cpu(), nrow=nrow, padding=2).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(path)


def train(images: torch.Tensor, run_dir: str | os.PathLike[str], model: ModelConfig, cfg: TrainConfig, seed: int,
          device: torch.device) -> dict[str, Any]:
    """Train G and D on uint8 images [n, 3, 64, 64]; returns the fit history and paths."""
    from repropipe.gan.features import Uint8Images
    from repropipe.training import LoopConfig, Precision, fit, seed_everything

    run_dir = Path(run_dir)
    seed_everything(seed)
    G, D = build_models(model)
    G, D = G.to(device), D.to(device)
    betas = (cfg.beta1, cfg.beta2)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=betas)
    n_dis, bs = cfg.n_dis, cfg.batch_size
    nz = model.nz
    amp = Precision(cfg.precision, device)
    step = make_step(G, D, opt_G, opt_D, nz=nz, n_dis=n_dis, gp_scale=cfg.gp_scale, device=device, precision=amp)
    fixed_z = torch.randn(64, nz, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    sample_every = cfg.sample_every

    def grids(global_step: int, _metrics: dict[str, float]) -> None:
        if sample_every and global_step % sample_every == 0:
            G.eval()
            with torch.no_grad():
                save_grid(G(fixed_z), run_dir / "samples" / f"step_{global_step:06d}.png")
            G.train()

    loop = LoopConfig(epochs=cfg.epochs, batch_size=bs * n_dis, seed=seed, checkpoint_every=cfg.checkpoint_every,
                      drop_last=True)
    if len(images) < bs * n_dis:
        raise ValueError(f"gan.train: {len(images)} training images < batch_size * n_dis = {bs * n_dis}")
    res = fit(step, Uint8Images(images), {"G": G, "D": D, "opt_G": opt_G, "opt_D": opt_D}, loop, run_dir,
              callbacks=[grids], device=device, precision=amp)
    G.eval()
    with torch.no_grad():
        save_grid(G(fixed_z), run_dir / "samples" / "final.png")
    return {"history": res.history, "global_step": res.global_step, "checkpoint": str(res.checkpoint),
            "resumed_from_step": res.resumed_from_step}


def load_trained(checkpoint: str | os.PathLike[str], model: ModelConfig,
                 device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """G and D from a training checkpoint, in eval mode."""
    G, D = build_models(model)
    payload = torch_load(checkpoint, map_location=device)  # weights_only: a pulled checkpoint cannot run code
    G.load_state_dict(payload["state"]["G"])
    D.load_state_dict(payload["state"]["D"])
    return G.to(device).eval(), D.to(device).eval()
