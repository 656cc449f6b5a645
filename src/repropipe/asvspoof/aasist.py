"""AASIST and AASIST-L (Jung et al., ICASSP 2022): raw-waveform countermeasures with spectro-temporal graph attention.

Written for this project from the paper and the authors' reference code (clovaai/aasist,
``models/AASIST.py``, MIT licence, Copyright (c) 2021-present NAVER Corp.), so that the authors'
published weights (``AASIST.pth``, ``AASIST-L.pth``) load strictly into it and give the authors'
scores. The pipeline, from a (B, samples) 16 kHz waveform:

1. **Sinc front end**: 70 fixed (not learned) band-pass filters of 129 taps, edges equally spaced
   on the mel scale, Hamming-windowed; |output|, 3x3 max-pooling, BatchNorm, SELU: a (B, 1, 23, T)
   "spectro-temporal" map.
2. **Residual encoder**: six blocks of two (2, 3) convolutions with a (1, 3) max-pool each.
3. **Graph attention per domain** (GAT-S, GAT-T): the encoder output max-reduced over time gives
   23 spectral nodes (plus a learned positional embedding), over frequency gives T temporal
   nodes; each graph gets one attention layer and a top-k graph pooling.
4. **HS-GAL**: two parallel branches, each a heterogeneous stacking graph attention layer on the
   union of temporal and spectral nodes with a learned *master* node, a pooling, and a second
   HS-GAL added residually; the branches are merged by an element-wise max.
5. **Readout**: max(|.|) and mean over temporal nodes and over spectral nodes, and the master
   node, concatenated (5 x gat_dims[1]) into a linear layer with two outputs (spoof, bona fide).

The bona fide score is ``logits[:, 1]``, as in the authors' ``produce_evaluation_file``.

Two details are reproduced on purpose because the published weights were trained with them:

* the residual block computes ``conv1`` on its *input*: the authors' block evaluates BatchNorm +
  SELU into a variable it then overwrites, so the pre-activation never reaches the output. Its
  ``bn1`` parameters therefore exist (and count: 297,866 / 85,306 parameters) but have no effect;
  this module keeps them for the strict load and does not run them;
* every pooling after an HS-GAL uses ``pool_ratios[2]`` (the fourth ratio is unused).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
NB_SAMP = 64600  # the authors' crop: 64,600 samples (~4.04 s); shorter utterances are repeated to fill it


@dataclass(frozen=True)
class AASISTConfig:
    """The ``model_config`` of the authors' AASIST.conf / AASIST-L.conf."""

    first_conv: int = 128
    filts: tuple = (70, (1, 32), (32, 32), (32, 64), (64, 64))
    gat_dims: tuple = (64, 32)
    pool_ratios: tuple = (0.5, 0.7, 0.5, 0.5)
    temperatures: tuple = (2.0, 2.0, 100.0, 100.0)
    nb_samp: int = NB_SAMP


CONFIGS = {
    "aasist": AASISTConfig(),
    "aasist_l": AASISTConfig(filts=(70, (1, 32), (32, 32), (32, 24), (24, 24)), gat_dims=(24, 32),
                             pool_ratios=(0.4, 0.5, 0.7, 0.5)),
}
PARAMETER_COUNTS = {"aasist": 297_866, "aasist_l": 85_306}  # as the authors' main.py prints them


def sinc_filterbank(n_filters: int, kernel_size: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(n_filters, taps) band-pass FIR filters, band edges equally spaced in mel between 0 Hz and Nyquist.

    The edges are taken from a 512-point FFT's frequency grid, as the authors do; each filter is
    the difference of two ideal low-pass sincs, times a symmetric Hamming window. An even
    ``kernel_size`` is made odd (symmetric filters), so 128 gives 129 taps.
    """
    taps = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size
    grid = (sample_rate // 2) * np.linspace(0.0, 1.0, 512 // 2 + 1)
    mel = 2595.0 * np.log10(1.0 + grid / 700.0)
    edges_mel = np.linspace(mel.min(), mel.max(), n_filters + 1)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    n = np.arange(-(taps - 1) / 2, (taps - 1) / 2 + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    ideal = (2 * hi / sample_rate) * np.sinc(2 * hi * n / sample_rate) - (2 * lo / sample_rate) * np.sinc(
        2 * lo * n / sample_rate)
    window = torch.from_numpy(np.hamming(taps)).float()
    return window[None, :] * torch.from_numpy(ideal).float()


class ResidualBlock(nn.Module):
    """Two (2, 3) convolutions with BatchNorm + SELU between them, a (1, 3) convolution on the skip path
    when the width changes, then a (1, 3) max-pool over time.

    ``bn1`` exists in every block but the first and is not applied (see the module docstring).
    """

    def __init__(self, c_in: int, c_out: int, first: bool = False) -> None:
        super().__init__()
        if not first:
            self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(2, 3), padding=(0, 1))
        self.conv_downsample = nn.Conv2d(c_in, c_out, kernel_size=(1, 3), padding=(0, 1)) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.selu(self.bn2(self.conv1(x))))
        skip = x if self.conv_downsample is None else self.conv_downsample(x)
        return F.max_pool2d(h + skip, (1, 3))


def _batchnorm_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the feature axis of (B, nodes, dim), every node of every utterance one sample."""
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N, N, D): the element-wise product of every pair of nodes."""
    return x[:, :, None, :] * x[:, None, :, :]


class GraphAttention(nn.Module):
    """A graph attention layer on a fully connected graph (GAT-S / GAT-T of the paper).

    Edge (i, j) gets the weight softmax_j(w . tanh(W_a (x_i * x_j)) / temperature); a node's output is
    W_1 (sum_j a_ij x_j) + W_2 x_i, then BatchNorm and SELU. Dropout 0.2 on the input nodes.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        logits = (torch.tanh(self.att_proj(_pairwise(x))) @ self.att_weight).squeeze(-1)  # (B, N, N)
        att = torch.softmax(logits / self.temperature, dim=-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_batchnorm_nodes(self.bn, out))


class HeteroGraphAttention(nn.Module):
    """The heterogeneous stacking graph attention layer (HS-GAL) on temporal + spectral nodes.

    Each node type is first projected (W_t, W_s) into a common space; the attention vector depends
    on the edge type: temporal-temporal, spectral-spectral, or across (one vector for both
    directions). A *master* node attends to every node (its own projection and attention vector)
    and is updated without normalisation. Returns the updated temporal nodes, spectral nodes and
    master node.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)  # temporal nodes
        self.proj_type2 = nn.Linear(in_dim, in_dim)  # spectral nodes
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.att_weight22 = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.att_weight12 = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.att_weightM = nn.Parameter(nn.init.xavier_normal_(torch.empty(out_dim, 1)))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(self, temporal: torch.Tensor, spectral: torch.Tensor,
                master: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_t, n_s = temporal.shape[1], spectral.shape[1]
        x = self.input_drop(torch.cat([self.proj_type1(temporal), self.proj_type2(spectral)], dim=1))
        # edge-type attention: one score per edge from the vector of its type (0: t-t, 1: s-s, 2: across)
        e = torch.tanh(self.att_proj(_pairwise(x)))
        vectors = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)  # (out_dim, 3)
        kind = torch.full((n_t + n_s, n_t + n_s), 2, dtype=torch.long, device=x.device)
        kind[:n_t, :n_t], kind[n_t:, n_t:] = 0, 1
        logits = (e @ vectors).gather(-1, kind.expand(x.shape[0], -1, -1)[..., None]).squeeze(-1)
        att = torch.softmax(logits / self.temperature, dim=-1)
        # the master node attends to every node
        m_logits = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, N, 1)
        m_att = torch.softmax(m_logits / self.temperature, dim=1)
        master = self.proj_with_attM(m_att.transpose(1, 2) @ x) + self.proj_without_attM(master)
        out = F.selu(_batchnorm_nodes(self.bn, self.proj_with_att(att @ x) + self.proj_without_att(x)))
        return out[:, :n_t], out[:, n_t:], master


class GraphPool(nn.Module):
    """Top-k graph pooling: keep the ``int(N * ratio)`` nodes (at least one) with the highest
    sigmoid(linear) score, each scaled by its score; dropout 0.3 on the scorer's input."""

    def __init__(self, ratio: float, dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        k = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, k, dim=1).indices
        return torch.gather(h * scores, 1, idx.expand(-1, -1, h.shape[-1]))


class AASIST(nn.Module):
    """AASIST / AASIST-L (see the module docstring); ``forward`` gives the bona fide score ``logits[:, 1]``.

    Takes a (B, samples) or (B, 1, samples) float waveform at 16 kHz, any length of at least a few
    thousand samples (the authors use 64,600).
    """

    head_name = "ce2"  # two-class cross-entropy (see :meth:`loss`)

    def __init__(self, cfg: AASISTConfig = AASISTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        n_filt, blocks = cfg.filts[0], cfg.filts[1:]
        widths = [tuple(blocks[0]), tuple(blocks[1]), tuple(blocks[2]), tuple(blocks[3]), tuple(blocks[3]),
                  tuple(blocks[3])]
        d_enc, (d_gat, d_het) = widths[-1][1], cfg.gat_dims
        self.register_buffer("sinc", sinc_filterbank(n_filt, cfg.first_conv)[:, None, :], persistent=False)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.ModuleList(ResidualBlock(a, b, first=i == 0) for i, (a, b) in enumerate(widths))
        self.pos_S = nn.Parameter(torch.randn(1, n_filt // 3, d_enc))
        self.master1 = nn.Parameter(torch.randn(1, 1, d_gat))
        self.master2 = nn.Parameter(torch.randn(1, 1, d_gat))
        t = cfg.temperatures
        self.gat_spectral = GraphAttention(d_enc, d_gat, t[0])
        self.gat_temporal = GraphAttention(d_enc, d_gat, t[1])
        self.hsgal = nn.ModuleList([  # two branches, each an HS-GAL then a stacked (residual) HS-GAL
            nn.ModuleList([HeteroGraphAttention(d_gat, d_het, t[2]), HeteroGraphAttention(d_het, d_het, t[2])])
            for _ in range(2)])
        r = cfg.pool_ratios
        self.pool_spectral = GraphPool(r[0], d_gat)
        self.pool_temporal = GraphPool(r[1], d_gat)
        # per branch: (spectral, temporal) pooling after the first HS-GAL; all use pool_ratios[2]
        self.pool_hetero = nn.ModuleList(nn.ModuleList([GraphPool(r[2], d_het), GraphPool(r[2], d_het)])
                                         for _ in range(2))
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * d_het, 2)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, channels, 23, frames): sinc front end and residual encoder."""
        x = F.conv1d(wav.reshape(wav.shape[0], 1, -1), self.sinc)
        x = F.max_pool2d(x.abs()[:, None], (3, 3))
        x = F.selu(self.first_bn(x))
        for block in self.encoder:
            x = block(x)
        return x

    def logits(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 2) logits, class 0 spoof and class 1 bona fide (the authors' label convention)."""
        e = self.encode(wav).abs()
        spectral = self.pool_spectral(self.gat_spectral(e.amax(dim=3).transpose(1, 2) + self.pos_S))
        temporal = self.pool_temporal(self.gat_temporal(e.amax(dim=2).transpose(1, 2)))
        branches = []
        for (first, second), (pool_s, pool_t), master in zip(self.hsgal, self.pool_hetero, (self.master1, self.master2)):
            t1, s1, m1 = first(temporal, spectral, master.expand(e.shape[0], -1, -1))
            t1, s1 = pool_t(t1), pool_s(s1)
            t2, s2, m2 = second(t1, s1, m1)
            branches.append([self.drop_way(v) for v in (t1 + t2, s1 + s2, m1 + m2)])
        (ta, sa, ma), (tb, sb, mb) = branches
        t, s, m = torch.maximum(ta, tb), torch.maximum(sa, sb), torch.maximum(ma, mb)
        hidden = torch.cat([t.abs().amax(dim=1), t.mean(dim=1), s.abs().amax(dim=1), s.mean(dim=1), m[:, 0]], dim=1)
        return self.out_layer(self.drop(hidden))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.logits(wav)[:, 1]

    def loss(self, logits: torch.Tensor, label: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
        """Cross-entropy over (spoof, bona fide); ``pos_weight`` weighs bona fide against spoof 1.

        The authors weigh the classes 0.1 : 0.9, i.e. ``pos_weight`` 9 (about the train set's
        spoof : bona fide ratio, 8.8, which ``imbalance: weighted_loss`` gives).
        """
        w = None if pos_weight is None else torch.tensor([1.0, float(pos_weight)], device=logits.device,
                                                        dtype=logits.dtype)
        return F.cross_entropy(logits, label.long(), weight=w)


# --------------------------------------------------------------------------- the authors' published weights

_TOP_LEVEL = {  # authors' module name -> this module's
    "GAT_layer_S": "gat_spectral", "GAT_layer_T": "gat_temporal",
    "HtrgGAT_layer_ST11": "hsgal.0.0", "HtrgGAT_layer_ST12": "hsgal.0.1",
    "HtrgGAT_layer_ST21": "hsgal.1.0", "HtrgGAT_layer_ST22": "hsgal.1.1",
    "pool_S": "pool_spectral", "pool_T": "pool_temporal",
    "pool_hS1": "pool_hetero.0.0", "pool_hT1": "pool_hetero.0.1",
    "pool_hS2": "pool_hetero.1.0", "pool_hT2": "pool_hetero.1.1",
}


def map_authors_key(key: str) -> str:
    """An authors' state-dict key -> this module's (``encoder.2.0.conv1.weight`` -> ``encoder.2.conv1.weight``)."""
    head, _, rest = key.partition(".")
    if head == "encoder":
        block, _, rest = rest.partition(".")
        return f"encoder.{block}.{rest.partition('.')[2]}"  # drop the authors' one-block Sequential
    return f"{_TOP_LEVEL[head]}.{rest}" if head in _TOP_LEVEL else key


def authors_key(key: str) -> str:
    """The inverse of :func:`map_authors_key`: this module's key -> the authors'."""
    head, _, rest = key.partition(".")
    if head == "encoder":
        block, _, rest = rest.partition(".")
        return f"encoder.{block}.0.{rest}"
    for theirs, ours in _TOP_LEVEL.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    return key


def variant_of(state: dict[str, torch.Tensor]) -> str:
    """``aasist`` or ``aasist_l`` from the shapes in an authors' state dict (the encoder's width)."""
    for name, cfg in CONFIGS.items():
        w = state.get("encoder.5.0.conv2.weight")
        if w is not None and w.shape[0] == cfg.filts[-1][1] and state["pos_S"].shape[-1] == cfg.filts[-1][1] \
                and state["master1"].shape[-1] == cfg.gat_dims[0]:
            return name
    raise ValueError("not an AASIST or AASIST-L state dict (encoder width / gat_dims match neither config)")


def load_pretrained_aasist(path: str | os.PathLike[str], variant: str | None = None) -> AASIST:
    """The authors' published AASIST or AASIST-L weights (``AASIST.pth`` / ``AASIST-L.pth``) in this module.

    Read with ``weights_only=True`` (:func:`repropipe.io.torch_load`); keys are renamed by
    :func:`map_authors_key` and loaded strictly, so a missing, extra or misshapen tensor is a
    :class:`repropipe.io.DataError` naming the file. ``variant`` (``aasist`` / ``aasist_l``) is
    inferred from the tensor shapes when not given. Returned in eval mode on the CPU.
    """
    from repropipe.io import DataError, torch_load

    state = torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(path, "expected a state dict (names -> tensors), as the authors' AASIST.pth")
    try:
        variant = variant or variant_of(state)
    except (ValueError, KeyError) as exc:
        raise DataError(path, str(exc) if isinstance(exc, ValueError) else f"no tensor {exc}") from exc
    model = AASIST(CONFIGS[variant])
    mapped = {map_authors_key(k): k for k in state}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(mapped[k] for k in set(mapped) - set(expected))
    misshapen = sorted(f"{mapped[k]} {tuple(state[mapped[k]].shape)} (expected {tuple(v.shape)})"
                       for k, v in expected.items() if k in mapped and state[mapped[k]].shape != v.shape)
    if missing or unexpected or misshapen:  # named as in the authors' file
        problems = [f"missing {', '.join(authors_key(k) for k in missing)}" if missing else "",
                    f"unexpected {', '.join(unexpected)}" if unexpected else "",
                    f"wrong shape {', '.join(misshapen)}" if misshapen else ""]
        raise DataError(path, f"does not load strictly into {variant}: " + "; ".join(p for p in problems if p))
    model.load_state_dict({k: state[a] for k, a in mapped.items()}, strict=True)
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Every parameter (the authors' count: ``sum(p.numel() for p in model.parameters())``)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["AASIST", "AASISTConfig", "CONFIGS", "PARAMETER_COUNTS", "authors_key", "load_pretrained_aasist",
           "map_authors_key", "parameter_count", "sinc_filterbank", "variant_of"]
