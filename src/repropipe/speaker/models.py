"""Speaker networks, registered by name so params choose them and tests build every one.

Inputs are log-mel frames ``(batch, frames, n_mels)`` plus optional ``lengths`` ``(batch,)``:
evaluation feeds whole utterances padded to the longest in the batch, and every layer that mixes
frames (attention, convolution, pooling) ignores the padding, so padding never changes an output
(tests/test_speaker.py checks it).

The classifier family is one module with three switches, which is exactly the ablation:

=========================  =============  ==========  ==========
name                       encoder        pooling     head
=========================  =============  ==========  ==========
speaker_hw4_baseline       transformer    mean        linear      (the HW4 sample code)
speaker_conformer          conformer      mean        linear
speaker_attn_pool          transformer    attention   linear
speaker_am_softmax         transformer    mean        AM-softmax
speaker_conformer_sap_am   conformer      attention   AM-softmax  ("all")
=========================  =============  ==========  ==========

The Conformer's self-attention is ``speaker.model.attention``: ``none`` (the demo's
default) is plain multi-head attention with no positional information, ``relative`` the paper's
(Gulati et al. 2020) Transformer-XL relative sinusoidal positions with learned u, v biases
(:class:`RelPositionSelfAttention`).

``speaker_triplet`` is a small conv1d embedder trained with a triplet loss on L2-normalised
outputs; ``speaker_conv_autoencoder`` shares its encoder and can initialise it without labels.

``speaker_ecapa_tdnn`` is ECAPA-TDNN (Desplanques et al. 2020, arXiv:2005.07143), speechbrain's
implementation (``speechbrain.lobes.models.ECAPA_TDNN``), with an AAM-softmax head (speechbrain's
cosine ``Classifier`` and ``AdditiveAngularMargin``; the paper's margin 0.2 and scale 30). The
paper's C = 1024 system is ``channels=1024, mfa_channels=1536`` on 80 filterbanks: 14,660,416
parameters, the paper's "14.7M" (tests/test_speaker.py).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repropipe.models import register_model

N_MELS = 40


def padding_mask(lengths: torch.Tensor | None, frames: int, device: torch.device) -> torch.Tensor | None:
    """True at padded frames (the convention of nn.MultiheadAttention's key_padding_mask)."""
    if lengths is None:
        return None
    return torch.arange(frames, device=device)[None, :] >= lengths.to(device)[:, None]


def masked_mean(x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    if pad is None:
        return x.mean(1)
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class SelfAttentionPooling(nn.Module):
    """softmax(w^T h_t) over frames (padding excluded), then the weighted sum of h_t."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.score = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        s = self.score(x).squeeze(-1)
        if pad is not None:
            s = s.masked_fill(pad, float("-inf"))
        return torch.einsum("bt,btd->bd", torch.softmax(s, dim=1), x)


class FeedForward(nn.Module):
    def __init__(self, d: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ff), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ff, d),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module; padded frames are zeroed before the depthwise conv."""

    def __init__(self, d: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        h = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)
        if pad is not None:
            h = h.masked_fill(pad.unsqueeze(1), 0.0)
        h = self.pw2(F.silu(self.bn(self.dw(h))))
        return self.drop(h.transpose(1, 2))


def relative_sinusoids(frames: int, d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoids R_{i-j} for the relative distances T-1, T-2, ..., -(T-1): (2T-1, d).

    Row k holds distance T-1-k, so after :func:`rel_shift` query i meets key j at distance i - j.
    A distance's encoding does not depend on T, which is what keeps padding from changing a frame.
    """
    dist = torch.arange(frames - 1, -frames, -1, device=device, dtype=torch.float32)
    inv_freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    angle = dist[:, None] * inv_freq[None, :]
    pe = torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(1)  # sin at even, cos at odd columns
    return pe.to(dtype)


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """(..., T, 2T-1) scores against distances T-1..-(T-1) -> (..., T, T) with [i, j] at distance i - j.

    Transformer-XL's trick (Dai et al. 2019, appendix B): one zero column, a reshape and a slice
    instead of gathering T^2 entries. Row i of the result is row i of the input shifted left by
    T-1-i, i.e. ``out[..., i, j] = scores[..., i, T-1-i+j]``.
    """
    *lead, t, n = scores.shape
    padded = torch.cat([scores.new_zeros(*lead, t, 1), scores], dim=-1)  # (..., T, 2T)
    padded = padded.view(*lead, n + 1, t)[..., 1:, :]  # drop the first "row" of the reinterpreted layout
    return padded.reshape(*lead, t, n)[..., : n // 2 + 1]


class RelPositionSelfAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL's relative positions (the Conformer's MHSA).

    score(i, j) = [(q_i + u)^T k_j + (q_i + v)^T W_R R_{i-j}] / sqrt(d_head), per head, with R the
    sinusoids of the distance i - j, W_R a bias-free projection and u, v learned per-head biases
    (Dai et al. 2019, eq. 2 rewritten as in its section 3.3; Gulati et al. 2020, section 2.1).
    Q, K, V and output projections are laid out as nn.MultiheadAttention's (one in_proj, one
    out_proj); W_R (d^2) and u, v (2 d) are the additions. Padded keys are masked out.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads or d % 2:
            raise ValueError(f"relative attention needs an even d_model divisible by n_heads, got {d} and {heads}")
        self.heads, self.d_head = heads, d // heads
        self.in_proj = nn.Linear(d, 3 * d)
        self.pos_proj = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.d_head))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.d_head))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.out_proj = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, heads, T, d_head)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.d_head).transpose(1, 2)

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-softmax scores (B, heads, T, T) and the values (B, heads, T, d_head)."""
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        frames = x.shape[1]
        r = self.pos_proj(relative_sinusoids(frames, x.shape[-1], x.device, x.dtype))  # (2T-1, d)
        r = r.view(2 * frames - 1, self.heads, self.d_head).transpose(0, 1)  # (heads, 2T-1, d_head)
        content = (q + self.pos_bias_u[:, None, :]) @ k.transpose(-1, -2)
        position = rel_shift((q + self.pos_bias_v[:, None, :]) @ r.transpose(-1, -2))
        return (content + position) / math.sqrt(self.d_head), v

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        s, v = self.scores(x)
        if pad is not None:
            s = s.masked_fill(pad[:, None, None, :], float("-inf"))
        h = self.drop(torch.softmax(s, dim=-1)) @ v  # (B, heads, T, d_head)
        return self.out_proj(h.transpose(1, 2).reshape(x.shape))


ATTENTION = ("none", "relative")


class ConformerBlock(nn.Module):
    """FF/2 -> MHSA -> conv -> FF/2 -> LayerNorm (Gulati et al. 2020), each with a residual.

    ``attention="none"`` is plain nn.MultiheadAttention with no positional information
    (the demo's block; only the convolution module sees frame order); ``"relative"`` is the
    paper's MHSA with Transformer-XL relative positions (:class:`RelPositionSelfAttention`).
    """

    def __init__(self, d: int, heads: int, ff: int, kernel: int, dropout: float,
                 attention: str = "none") -> None:
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.ff1, self.ff2 = FeedForward(d, ff, dropout), FeedForward(d, ff, dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.relative = attention == "relative"
        if self.relative:
            self.attn: nn.Module = RelPositionSelfAttention(d, heads, dropout)
        else:
            self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d, kernel, dropout)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        if self.relative:
            h = self.attn(h, pad)
        else:
            h = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        x = x + self.attn_drop(h)
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class AMSoftmaxHead(nn.Module):
    """Additive margin softmax: logits s*cos(theta), minus s*m at the target class in training."""

    def __init__(self, d: int, n_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, d) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * cos


class LinearHead(nn.Module):
    """The HW4 prediction layer: Linear, ReLU, Linear."""

    def __init__(self, d: int, n_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_classes))

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(emb)


class SpeakerClassifier(nn.Module):
    """Prenet -> encoder -> pooling -> head; ``embed`` gives the pooled vector used for verification.

    ``attention`` chooses the Conformer's self-attention (:class:`ConformerBlock`); the Transformer
    encoders are the HW4 sample's nn.TransformerEncoder and keep its plain attention either way.
    """

    def __init__(self, n_classes: int = 8, n_mels: int = N_MELS, d_model: int = 32, n_heads: int = 2,
                 n_layers: int = 1, ff_dim: int = 64, conv_kernel: int = 7, dropout: float = 0.1,
                 encoder: str = "transformer", pooling: str = "mean", head: str = "linear",
                 am_scale: float = 30.0, am_margin: float = 0.2, attention: str = "none") -> None:
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.prenet = nn.Linear(n_mels, d_model)
        self.encoder_kind = encoder
        if encoder == "transformer":
            layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_dim, dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        elif encoder == "conformer":
            self.encoder = nn.ModuleList(ConformerBlock(d_model, n_heads, ff_dim, conv_kernel, dropout, attention)
                                         for _ in range(n_layers))
        else:
            raise ValueError(f"encoder must be transformer or conformer, got {encoder!r}")
        if pooling not in ("mean", "attention"):
            raise ValueError(f"pooling must be mean or attention, got {pooling!r}")
        self.pool = SelfAttentionPooling(d_model) if pooling == "attention" else None
        if head == "linear":
            self.head: nn.Module = LinearHead(d_model, n_classes)
        elif head == "amsoftmax":
            self.head = AMSoftmaxHead(d_model, n_classes, am_scale, am_margin)
        else:
            raise ValueError(f"head must be linear or amsoftmax, got {head!r}")

    def embed(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        pad = padding_mask(lengths, mels.shape[1], mels.device)
        x = self.prenet(mels)
        if self.encoder_kind == "transformer":
            x = self.encoder(x, src_key_padding_mask=pad)
        else:
            for block in self.encoder:
                x = block(x, pad)
        return self.pool(x, pad) if self.pool is not None else masked_mean(x, pad)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits; with ``labels`` (training) the AM-softmax head subtracts its margin."""
        return self.head(self.embed(mels, lengths), labels)


class ConvEncoder1d(nn.Module):
    """Conv blocks over time with MaxPool1d(2) between them; padding is zeroed before every conv."""

    def __init__(self, n_mels: int = N_MELS, channels: int = 64, n_blocks: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        c_in = n_mels
        for _ in range(n_blocks):
            self.convs.append(nn.Conv1d(c_in, channels, 5, padding=2))
            self.bns.append(nn.BatchNorm1d(channels))
            c_in = channels
        self.pool = nn.MaxPool1d(2, return_indices=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, keep_indices: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[torch.Tensor, int]]]:
        """(B, C, T) -> (B, channels, T / 2^(blocks-1)), new lengths, pooling indices for the decoder."""
        indices = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i > 0:
                size = x.shape[-1]
                x, idx = self.pool(x)
                indices.append((idx, size))
                if lengths is not None:
                    lengths = torch.div(lengths, 2, rounding_mode="floor").clamp_min(1)
            if lengths is not None:
                x = x.masked_fill(padding_mask(lengths, x.shape[-1], x.device).unsqueeze(1), 0.0)
            x = F.relu(bn(conv(x)))
        return x, lengths, indices


class TripletEmbedder(nn.Module):
    """Conv1d encoder, global average pooling (padding excluded), linear, L2 normalisation."""

    def __init__(self, n_mels: int = N_MELS, channels: int = 64, emb_dim: int = 64, n_blocks: int = 3) -> None:
        super().__init__()
        self.encoder = ConvEncoder1d(n_mels, channels, n_blocks)
        self.proj = nn.Linear(channels, emb_dim)
        self.bn = nn.BatchNorm1d(emb_dim)  # centres the embeddings: without it they start (and stay) collapsed

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, lengths, _ = self.encoder(mels.transpose(1, 2), lengths)
        pad = padding_mask(lengths, h.shape[-1], h.device)
        return F.normalize(self.bn(self.proj(masked_mean(h.transpose(1, 2), pad))), dim=1)

    embed = forward


class ConvAutoencoder(nn.Module):
    """The triplet encoder plus a decoder of MaxUnpool1d (with the encoder's indices) and convs."""

    def __init__(self, n_mels: int = N_MELS, channels: int = 64, n_blocks: int = 3) -> None:
        super().__init__()
        self.encoder = ConvEncoder1d(n_mels, channels, n_blocks)
        self.unpool = nn.MaxUnpool1d(2)
        self.dec = nn.ModuleList(nn.Conv1d(channels, channels, 5, padding=2) for _ in range(n_blocks - 1))
        self.out = nn.Conv1d(channels, n_mels, 5, padding=2)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``mels`` (B, T, n_mels); compare with the input on the same frames."""
        h, _, indices = self.encoder(mels.transpose(1, 2))
        for conv, (idx, size) in zip(self.dec, reversed(indices)):
            h = F.relu(conv(self.unpool(h, idx, output_size=[size])))
        return self.out(h).transpose(1, 2)


class ECAPASpeaker(nn.Module):
    """speechbrain's ECAPA-TDNN embedder plus an AAM-softmax speaker head.

    Every convolution of ECAPA-TDNN sees the frames around it, and speechbrain pads a batch and
    lets the convolutions run over the padding (only the SE means and the pooling are masked), so
    a padded utterance would get another embedding than the same utterance alone. In eval mode
    (identification, verification) the frame-level layers (SE-Res2Net blocks, multi-layer
    aggregation, attentive statistics pooling) therefore run on the utterances of each length
    together, without padding, exactly as speechbrain's own forward does for an unpadded batch;
    the batch-level layers (BatchNorm of the pooled statistics, the embedding layer) then run on
    the whole batch. Training runs speechbrain's forward as speechbrain trains it (one padded
    batch, relative lengths): the crops are mostly of one length, and one call per length would
    double the cost of a step.
    """

    def __init__(self, n_classes: int = 8, n_mels: int = N_MELS, channels: int = 64, mfa_channels: int = 192,
                 attention_channels: int = 32, se_channels: int = 32, res2net_scale: int = 8, emb_dim: int = 64,
                 aam_scale: float = 30.0, aam_margin: float = 0.2) -> None:
        super().__init__()
        # imported here: speechbrain takes seconds to import, and only this model needs it. Its
        # import also applies "quirks" to the whole process (speechbrain.utils.quirks): TF32 for
        # every CUDA matmul and convolution, JIT profiling off. The other speaker models train in
        # the same process, and their numbers must not depend on whether ECAPA was built first.
        os.environ.setdefault("SB_DISABLE_QUIRKS", "allow_tf32,disable_jit_profiling")
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
        from speechbrain.nnet.losses import AdditiveAngularMargin

        if channels % res2net_scale:
            raise ValueError(f"channels {channels} must be a multiple of res2net_scale {res2net_scale}")
        self.ecapa = ECAPA_TDNN(n_mels, channels=[channels] * 4 + [mfa_channels], lin_neurons=emb_dim,
                                attention_channels=attention_channels, se_channels=se_channels,
                                res2net_scale=res2net_scale)
        self.classifier = Classifier(emb_dim, lin_blocks=0, out_neurons=n_classes)  # cosine to class centres
        self.aam = AdditiveAngularMargin(margin=aam_margin, scale=aam_scale)
        self.n_classes, self.scale = n_classes, aam_scale

    def _pooled(self, mels: torch.Tensor) -> torch.Tensor:
        """speechbrain's ECAPA_TDNN.forward up to the pooling, for unpadded (B, T, n_mels): (B, 2 * mfa, 1)."""
        from speechbrain.lobes.models.ECAPA_TDNN import TDNNBlock

        x, outs = mels.transpose(1, 2), []
        for layer in self.ecapa.blocks:
            x = layer(x) if isinstance(layer, TDNNBlock) else layer(x, lengths=None)
            outs.append(x)
        return self.ecapa.asp(self.ecapa.mfa(torch.cat(outs[1:], dim=1)))

    def embed(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Speaker embeddings (B, emb_dim): the vector verification scores by cosine."""
        if self.training:
            rel = None if lengths is None else lengths.to(mels.device, mels.dtype) / mels.shape[1]
            return self.ecapa(mels, rel).squeeze(1)
        if lengths is None:
            stats = self._pooled(mels)
        else:
            lengths = lengths.to(mels.device)
            parts, order = [], []
            for n in lengths.unique().tolist():
                idx = (lengths == n).nonzero().flatten()
                parts.append(self._pooled(mels[idx, :n]))
                order.append(idx)
            stats = torch.cat(parts)[torch.argsort(torch.cat(order))]
        return self.ecapa.fc(self.ecapa.asp_bn(stats)).squeeze(-1)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled cosine logits; with ``labels`` (training) the target's angle gets the additive margin."""
        cos = self.classifier(self.embed(mels, lengths).unsqueeze(1)).squeeze(1)
        if labels is None:
            return self.scale * cos
        return self.aam(cos, F.one_hot(labels, self.n_classes).to(cos.dtype))


def _example_seq() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 50, N_MELS), torch.tensor([50, 37])


ABLATION: dict[str, dict[str, str]] = {
    "speaker_hw4_baseline": {"encoder": "transformer", "pooling": "mean", "head": "linear"},
    "speaker_conformer": {"encoder": "conformer", "pooling": "mean", "head": "linear"},
    "speaker_attn_pool": {"encoder": "transformer", "pooling": "attention", "head": "linear"},
    "speaker_am_softmax": {"encoder": "transformer", "pooling": "mean", "head": "amsoftmax"},
    "speaker_conformer_sap_am": {"encoder": "conformer", "pooling": "attention", "head": "amsoftmax"},
}


def _classifier(config: dict[str, str], **kwargs: Any) -> SpeakerClassifier:
    return SpeakerClassifier(**{**kwargs, **config})


for _name, _cfg in ABLATION.items():
    register_model(_name, branch="speaker", example=_example_seq)(functools.partial(_classifier, _cfg))


@register_model("speaker_ecapa_tdnn", branch="speaker", example=_example_seq)
def speaker_ecapa_tdnn(**kwargs: Any) -> ECAPASpeaker:
    return ECAPASpeaker(**kwargs)


# every model with a speaker head (identification by its logits; the rest identify by centroids)
CLASSIFIERS: tuple[str, ...] = (*ABLATION, "speaker_ecapa_tdnn")


@register_model("speaker_triplet", branch="speaker", example=_example_seq)
def speaker_triplet(**kwargs: Any) -> TripletEmbedder:
    return TripletEmbedder(**kwargs)


@register_model("speaker_conv_autoencoder", branch="speaker", example=lambda: (torch.randn(2, 48, N_MELS),))
def speaker_conv_autoencoder(**kwargs: Any) -> ConvAutoencoder:
    return ConvAutoencoder(**kwargs)
