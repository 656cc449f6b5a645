"""EEG models, each registered by name: a from-scratch Transformer, a Linformer variant, SimCLR.

Input everywhere: a chunk ``x`` of shape [batch, channels, time] (per-channel normalised).

* ``eeg_transformer``: tokens are time slices (``token_len`` samples x all channels, flattened and
  linearly embedded), sinusoidal positional encoding, ``layers`` pre-norm encoder layers of
  multi-head scaled dot-product attention written out by hand, and a learned class token read out
  by cross-attention (a one-query decoder step) into a two-class head.
* ``eeg_linformer``: the same network with Linformer self-attention (Wang et al. 2020,
  "Linformer: Self-Attention with Linear Complexity", arXiv:2006.04768): keys and values are
  projected along the sequence axis from n to ``k`` rows by learned E, F, so attention costs
  O(n k) instead of O(n^2). E and F are learned at a base length ``proj_len`` and linearly
  resampled along the sequence axis (and rescaled by proj_len / n) for any other n, so one trained
  model runs at every length the benchmark asks for.
* ``eeg_simclr``: SeqCLR-style (Mohsenvand et al. 2020) SimCLR for EEG: channel recombination
  (differences of neighbouring electrodes appended as extra channels), a per-channel convolutional
  encoder, a projector for the NT-Xent loss, and a classifier (shaped like the projector, two-class
  output, LogSoftmax) over the concatenated channel embeddings.
* ``eegnet``: EEGNet (Lawhern et al. 2018, "EEGNet: a compact convolutional neural network for
  EEG-based brain-computer interfaces", arXiv:1611.08024), taken from torcheeg
  (``torcheeg.models.EEGNet``) rather than written again: temporal convolution (F1 filters of
  ``kernel_1`` samples), depthwise spatial convolution over all electrodes (D filters per temporal
  filter, max-norm 1), separable convolution (``kernel_2``) to F2 maps, average pooling, one linear
  layer. EEGNet-8,2 is F1 = 8, D = 2, F2 = 16; it is the published anchor of this branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from repropipe.models import register_model

N_CH, T = 64, 160


def _example() -> tuple[torch.Tensor]:
    return (torch.randn(2, N_CH, T),)


# ------------------------------------------------------------------------------------ attention
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V over the last two dims."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


class MultiHeadAttention(nn.Module):
    """Multi-head attention; with ``kv_len`` set it is Linformer attention (project K, V to ``k_proj``)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, linformer_k: int = 0, proj_len: int = 0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.h, self.dk = heads, d_model // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.linformer_k = linformer_k
        if linformer_k:
            self.E = nn.Parameter(torch.randn(linformer_k, proj_len) / math.sqrt(proj_len))
            self.F = nn.Parameter(torch.randn(linformer_k, proj_len) / math.sqrt(proj_len))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.h, self.dk).transpose(1, 2)  # [b, h, n, dk]

    def _project(self, P: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, base = x.shape[1], P.shape[1]
        if n != base:
            P = F.interpolate(P[None], size=n, mode="linear", align_corners=True)[0] * (base / n)
        return P @ x  # [k, n] @ [b, n, d] -> [b, k, d]

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = query if context is None else context
        k_in, v_in = context, context
        if self.linformer_k and context is query:
            k_in, v_in = self._project(self.E, context), self._project(self.F, context)
        q, k, v = self._split(self.q(query)), self._split(self.k(k_in)), self._split(self.v(v_in))
        out = attention(q, k, v)
        b, _, n, _ = out.shape
        return self.drop(self.o(out.transpose(1, 2).reshape(b, n, self.h * self.dk)))


class PositionalEncoding(nn.Module):
    """Sinusoidal (Vaswani et al.), length-agnostic so longer inputs work in the benchmark."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape[1], x.shape[2]
        pos = torch.arange(n, device=x.device, dtype=x.dtype)[:, None]
        div = torch.exp(torch.arange(0, d, 2, device=x.device, dtype=x.dtype) * (-math.log(10000.0) / d))
        pe = torch.zeros(n, d, device=x.device, dtype=x.dtype)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
        return x + pe


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff: int, dropout: float, linformer_k: int = 0, proj_len: int = 0) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout, linformer_k, proj_len)
        self.n1, self.n2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.ff(self.n2(x))


class EEGTransformer(nn.Module):
    """Time-slice tokens -> encoder -> class token cross-attends to the sequence -> 2 logits."""

    def __init__(self, n_channels: int = N_CH, token_len: int = 16, d_model: int = 32, heads: int = 4, layers: int = 2,
                 ff: int = 64, dropout: float = 0.1, n_classes: int = 2, linformer_k: int = 0, proj_len: int = 0,
                 spatial: int = 16) -> None:
        super().__init__()
        self.token_len = token_len
        # a learned spatial filter bank (like CSP) in front of the tokeniser: fewer embedding weights
        # per token, which is what lets the model generalise to subjects it never saw
        self.spatial = nn.Conv1d(n_channels, spatial, 1, bias=False) if spatial else nn.Identity()
        n_virtual = spatial or n_channels
        self.embed = nn.Sequential(nn.Linear(n_virtual * token_len, d_model), nn.LayerNorm(d_model))
        self.pos = PositionalEncoding()
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ff, dropout, linformer_k, proj_len)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        nn.init.normal_(self.cls, std=0.02)
        self.pool = MultiHeadAttention(d_model, heads)
        self.head = nn.Linear(d_model, n_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        n = t // self.token_len
        x = x[:, :, : n * self.token_len].reshape(b, c, n, self.token_len).permute(0, 2, 1, 3)
        return x.reshape(b, n, c * self.token_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pos(self.embed(self.tokens(self.spatial(x))))
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        cls = self.cls.expand(h.shape[0], -1, -1)
        pooled = cls + self.pool(cls, h)
        return self.head(pooled[:, 0])


@register_model("eeg_transformer", branch="eeg", example=_example)
def eeg_transformer(**kw) -> EEGTransformer:
    return EEGTransformer(**kw)


@register_model("eeg_linformer", branch="eeg", example=_example)
def eeg_linformer(linformer_k: int = 4, proj_len: int = 16, **kw) -> EEGTransformer:
    return EEGTransformer(linformer_k=linformer_k, proj_len=proj_len, **kw)


# --------------------------------------------------------------------------------------- SimCLR
def neighbour_pairs(ch_names: list[str]) -> list[tuple[int, int]]:
    """(i, j) with j the nearest other electrode to i on standard_1005; each unordered pair once."""
    import numpy as np

    from repropipe.eeg.data import _positions

    pos = _positions()
    xyz = np.array([pos[c.lower()] for c in ch_names])
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    pairs = {tuple(sorted((i, int(d[i].argmin())))) for i in range(len(ch_names))}
    return sorted(pairs)


def default_channels() -> list[str]:
    from repropipe.eeg.data import PHYSIONET_CHANNELS, standard_name

    return [standard_name(c) for c in PHYSIONET_CHANNELS]


class ChannelRecombination(nn.Module):
    """Append x_i - x_j for neighbouring electrode pairs (SeqCLR's channel recombination)."""

    def __init__(self, pairs: list[tuple[int, int]]) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor([p[0] for p in pairs], dtype=torch.long), persistent=False)
        self.register_buffer("b", torch.tensor([p[1] for p in pairs], dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x[:, self.a] - x[:, self.b]], dim=1)


class ChannelEncoder(nn.Module):
    """One channel's signal [B, 1, T] -> embedding [B, emb]; shared over channels."""

    def __init__(self, emb: int = 16, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, width // 2, 15, padding=7, stride=2), nn.BatchNorm1d(width // 2), nn.GELU(),
            nn.Conv1d(width // 2, width, 9, padding=4, stride=2), nn.BatchNorm1d(width), nn.GELU(),
        )
        self.out = nn.Linear(2 * width, emb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        # mean and log-energy pooling over time: rhythm power is what the task turns on
        feats = torch.cat([h.mean(-1), torch.log(h.pow(2).mean(-1) + 1e-4)], dim=1)
        return self.out(feats)


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class EEGSimCLR(nn.Module):
    def __init__(self, ch_names: list[str] | None = None, emb: int = 16, proj_dim: int = 32, hidden: int = 64,
                 n_classes: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        ch_names = ch_names or default_channels()
        self.recombine = ChannelRecombination(neighbour_pairs(ch_names))
        self.n_all = len(ch_names) + len(self.recombine.a)
        self.encoder = ChannelEncoder(emb)
        self.projector = mlp(emb, hidden, proj_dim)
        self.classifier = nn.Sequential(nn.Dropout(dropout), mlp(self.n_all * emb, hidden, n_classes), nn.LogSoftmax(dim=1))

    def channel_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, C_all, emb], every (recombined) channel encoded independently."""
        x = self.recombine(x)
        b, c, t = x.shape
        return self.encoder(x.reshape(b * c, 1, t)).view(b, c, -1)

    def project(self, single_channels: torch.Tensor) -> torch.Tensor:
        """[B, T] single-channel segments -> projector output z for NT-Xent."""
        return self.projector(self.encoder(single_channels[:, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.channel_embeddings(x).flatten(1))


@register_model("eeg_simclr", branch="eeg", example=_example)
def eeg_simclr(**kw) -> EEGSimCLR:
    return EEGSimCLR(**kw)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020): each view's positive is its pair, the other 2N-2 are negatives.

    loss = mean over the 2N anchors of -log( exp(sim(i,p)/tau) / sum_{k != i} exp(sim(i,k)/tau) ),
    sim = cosine similarity.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# --------------------------------------------------------------------------------------- EEGNet
class EEGNetChunks(nn.Module):
    """torcheeg's EEGNet on this branch's [batch, channels, time] chunks (torcheeg wants [batch, 1, C, T]).

    The network is torcheeg's own class, so its layers, initialisation and max-norm constraint are
    torcheeg 1.1.2's; only the input gets its singleton "image channel" axis here.
    """

    def __init__(self, num_electrodes: int = N_CH, chunk_size: int = T, F1: int = 8, D: int = 2, F2: int = 16,
                 kernel_1: int = 64, kernel_2: int = 16, dropout: float = 0.25, n_classes: int = 2) -> None:
        super().__init__()
        from torcheeg.models import EEGNet  # imported here: torcheeg pulls in every model it has (seconds)

        self.net = EEGNet(chunk_size=chunk_size, num_electrodes=num_electrodes, F1=F1, F2=F2, D=D,
                          num_classes=n_classes, kernel_1=kernel_1, kernel_2=kernel_2, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


@register_model("eegnet", branch="eeg", example=_example)
def eegnet(**kw) -> EEGNetChunks:
    """EEGNet-8,2 by default (F1 8, D 2, F2 16, temporal kernel 64, separable kernel 16)."""
    return EEGNetChunks(**kw)
