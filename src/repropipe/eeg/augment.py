"""Meaning-preserving augmentations for single-channel EEG segments (SeqCLR's set).

Each takes ``x`` [B, T] and a torch.Generator, so two views are reproducible from the seed.
None of them moves power between 8-30 Hz bands wholesale: amplitude scale, time shift (circular),
DC shift, additive Gaussian noise, a narrow band-stop at a random frequency, and zero-masking of a
short span.
"""

from __future__ import annotations

import torch

SFREQ = 160.0


def _u(g: torch.Generator, b: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(b, 1, generator=g) * (hi - lo) + lo).to(device)


def amplitude_scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x * _u(g, x.shape[0], 0.5, 2.0, x.device)


def time_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 40) -> torch.Tensor:
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=g)
    idx = (torch.arange(x.shape[1])[None] - shifts[:, None]) % x.shape[1]
    return torch.gather(x, 1, idx.to(x.device))


def dc_shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + _u(g, x.shape[0], -1.0, 1.0, x.device)


def additive_noise(x: torch.Tensor, g: torch.Generator, sigma: float = 0.2) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=g).to(x.device)


def band_stop(x: torch.Tensor, g: torch.Generator, width_hz: float = 3.0) -> torch.Tensor:
    spec = torch.fft.rfft(x, dim=1)
    f = torch.fft.rfftfreq(x.shape[1], 1 / SFREQ).to(x.device)
    centre = _u(g, x.shape[0], 1.0, 60.0, x.device)
    keep = (f[None] - centre).abs() > width_hz / 2
    return torch.fft.irfft(spec * keep, n=x.shape[1], dim=1)


def mask(x: torch.Tensor, g: torch.Generator, max_len: int = 32) -> torch.Tensor:
    b, t = x.shape
    start = torch.randint(0, t - max_len, (b,), generator=g)
    length = torch.randint(1, max_len + 1, (b,), generator=g)
    pos = torch.arange(t)[None]
    m = (pos >= start[:, None]) & (pos < (start + length)[:, None])
    return x.masked_fill(m.to(x.device), 0.0)


AUGMENTATIONS = (amplitude_scale, time_shift, dc_shift, additive_noise, band_stop, mask)


def random_view(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Apply each augmentation with probability ``p`` (drawn from ``g``), in a fixed order."""
    for aug in AUGMENTATIONS:
        on = torch.rand(x.shape[0], 1, generator=g).to(x.device) < p
        x = torch.where(on, aug(x, g), x)
    return x


def augment_batch(x: torch.Tensor, g: torch.Generator, max_shift: int = 40, noise: float = 0.3) -> torch.Tensor:
    """Supervised-training augmentation of whole chunks [B, C, T]: one amplitude scale (0.5-1.5), one
    circular time shift and additive Gaussian noise per chunk; label-preserving because the label
    lives in the relative power of C3 and C4, which none of these change."""
    b, c, t = x.shape
    scale = (torch.rand(b, 1, 1, generator=g) + 0.5).to(x.device)
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=g)
    idx = ((torch.arange(t)[None] - shifts[:, None]) % t).to(x.device)
    x = torch.gather(x, 2, idx[:, None, :].expand(b, c, t))
    return x * scale + noise * torch.randn(x.shape, generator=g).to(x.device)
