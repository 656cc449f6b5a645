"""Countermeasure networks, registered by name: LFCC-LCNN (sigmoid or OC-softmax head), NII's
LFCC-LCNN-LSTM-sum with P2SGrad, mel-ResNet18, and the raw-waveform AASIST / AASIST-L (:mod:`repropipe.asvspoof.aasist`).

Every model maps its input (a feature map (B, 1, n_features, frames), or a (B, samples)
waveform for the ``wave`` models) to one score per utterance, higher meaning more bona fide (the
ASVspoof convention), so evaluation treats them alike. Each model's ``loss`` matches its head
(``HEAD_OF``); ``ce2`` and ``p2s`` models also expose ``logits`` (B, 2), which their loss reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repropipe.asvspoof.aasist import AASIST, CONFIGS as AASIST_CONFIGS, load_pretrained_aasist  # noqa: F401
from repropipe.models import register_model

FEATURE_OF = {"lfcc_lcnn": "lfcc", "lfcc_lcnn_ocsoftmax": "lfcc", "mel_resnet18": "mel",
              "aasist": "wave", "aasist_l": "wave", "lfcc_lcnn_lstmsum_p2s": "lfcc"}
HEAD_OF = {"lfcc_lcnn": "sigmoid", "lfcc_lcnn_ocsoftmax": "ocsoftmax", "mel_resnet18": "sigmoid",
           "aasist": "ce2", "aasist_l": "ce2", "lfcc_lcnn_lstmsum_p2s": "p2s"}
TWO_CLASS_HEADS = ("ce2", "p2s")  # heads whose loss reads ``logits`` (B, 2) rather than the score


class MFM(nn.Module):
    """Max-Feature-Map: split channels in two halves and keep the element-wise max (Light CNN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.maximum(a, b)


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 2 * cout, k, padding=k // 2), MFM())


def lcnn_convolutions(affine: bool = True) -> nn.Sequential:
    """The nine MFM convolutions and four 2x2 max-poolings (frequency and time each / 16), with batch norm
    between them as in NII's LFCC-LCNN (``affine=False`` there: NII's BatchNorm2d layers have no parameters)."""
    def bn(c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, affine=affine)

    return nn.Sequential(
        _conv(1, 32, 5), nn.MaxPool2d(2),
        _conv(32, 32, 1), bn(32), _conv(32, 48, 3), nn.MaxPool2d(2), bn(48),
        _conv(48, 48, 1), bn(48), _conv(48, 64, 3), nn.MaxPool2d(2),
        _conv(64, 64, 1), bn(64), _conv(64, 32, 3), bn(32),
        _conv(32, 32, 1), bn(32), _conv(32, 32, 3), nn.MaxPool2d(2),
    )


class LCNN(nn.Module):
    """The LCNN of the ASVspoof 2019 LFCC-LCNN baseline (Lavrentyeva et al. 2019; Wang & Yamagishi 2021).

    Nine MFM convolutions with max-pooling, then statistics pooling over time (mean and std, so any
    number of frames works) and an MFM fully connected layer to an embedding.
    """

    def __init__(self, n_features: int = 60, emb_dim: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = lcnn_convolutions()
        self.drop = nn.Dropout(dropout)
        # four 2x2 poolings: the frequency axis shrinks to n_features // 16; mean and std double it
        self.fc = nn.Linear(2 * 32 * (n_features // 16), 2 * emb_dim)
        self.mfm = MFM()
        self.bn = nn.BatchNorm1d(emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)                      # (B, C, F', T')
        h = h.flatten(1, 2)                   # (B, C*F', T')
        stats = torch.cat([h.mean(-1), h.std(-1, unbiased=False)], dim=1)
        z = self.fc(self.drop(stats))
        return self.bn(self.mfm(z[:, :, None, None]).flatten(1))


class OCSoftmax(nn.Module):
    """One-class softmax (Zhang, Jiang & Duan 2021): bona fide compact around a learned centre.

    The score is the cosine similarity to the centre; the loss pushes bona fide above ``m_real``
    and spoofs below ``m_fake``, scaled by ``alpha``.
    """

    def __init__(self, emb_dim: int, m_real: float = 0.9, m_fake: float = 0.2, alpha: float = 20.0) -> None:
        super().__init__()
        self.center = nn.Parameter(torch.randn(emb_dim))
        self.m_real, self.m_fake, self.alpha = m_real, m_fake, alpha

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb, dim=1) @ F.normalize(self.center, dim=0)

    def loss(self, score: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        margin = torch.where(label > 0.5, self.m_real - score, score - self.m_fake)
        per = F.softplus(self.alpha * margin)
        return (per * weight).sum() / weight.sum() if weight is not None else per.mean()


class Countermeasure(nn.Module):
    """Embedding network + head; ``forward`` returns one score per utterance (higher = bona fide)."""

    def __init__(self, body: nn.Module, emb_dim: int, head: str) -> None:
        super().__init__()
        self.body, self.head_name = body, head
        self.head = OCSoftmax(emb_dim) if head == "ocsoftmax" else nn.Linear(emb_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.body(x)
        return self.head(emb).reshape(-1)

    def loss(self, score: torch.Tensor, label: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
        """BCE on the logit (sigmoid head) or the OC-softmax loss; ``pos_weight`` up-weights bona fide."""
        y = label.float()
        if self.head_name == "ocsoftmax":
            w = None if pos_weight is None else torch.where(y > 0.5, pos_weight, 1.0).to(score.dtype)
            return self.head.loss(score, y, w)
        pw = None if pos_weight is None else torch.tensor(pos_weight, device=score.device, dtype=score.dtype)
        return F.binary_cross_entropy_with_logits(score, y, pos_weight=pw)


class P2SActivation(nn.Module):
    """P2SGrad's output layer (Zhang et al. 2019, as NII's ``core_modules/p2sgrad.py``): cosine between the
    embedding and one unit-norm weight vector per class.

    NII keeps ``weight`` (in_dim, n_classes) and renormalises its columns on every call
    (``renorm(2, 1, 1e-5).mul(1e5)``); the cosine is clamped to [-1, 1].
    """

    def __init__(self, in_dim: int, n_classes: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, n_classes).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.renorm(2, 1, 1e-5).mul(1e5)
        return (x.mm(w) / x.norm(dim=1, keepdim=True)).clamp(-1, 1)


class LCNNLSTMSum(nn.Module):
    """NII's LFCC-LCNN-LSTM-sum with P2SGrad (Wang & Yamagishi 2021; project-NN-Pytorch-scripts,
    project/03-asvspoof-mega/lfcc-lcnn-lstmsum-p2s/*/model.py), the system behind the 1.92 % LA eval EER
    (best of six training runs; range 1.92-3.10 %).

    The nine MFM convolutions (batch norm without affine parameters, as NII's) and Dropout(0.7); the
    (channel x frequency / 16) map of each remaining frame goes through two BLSTM layers (hidden size half
    the width per direction, so the width is kept); the BLSTM output plus its input (the skip) is summed
    over time (NII's ``(hidden_features_lstm + hidden_features).sum(1)``: a sum, not a mean), projected to
    a 64-d embedding and scored by :class:`P2SActivation`. ``logits`` are the two cosines (spoof, bona
    fide); the score is the bona fide cosine, as NII's ``out_score[:, 1]``. The loss is P2SGrad's: mean
    squared error between the cosines and the one-hot label.

    NII lays its input out as (batch, 1, frames, features); ours is (batch, 1, features, frames). The
    convolutions are square, so the same weights (kernels transposed) give the same result, and the
    frame vectors are flattened in NII's (channel, frequency) order.
    """

    head_name = "p2s"

    def __init__(self, n_features: int = 60, emb_dim: int = 64, dropout: float = 0.7) -> None:
        super().__init__()
        width = (n_features // 16) * 32
        self.body = lcnn_convolutions(affine=False)
        self.drop = nn.Dropout(dropout)
        self.blstm1 = nn.LSTM(width, width // 2, bidirectional=True, batch_first=True)
        self.blstm2 = nn.LSTM(width, width // 2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(width, emb_dim)
        self.angle = P2SActivation(emb_dim, 2)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.body(x))                   # (B, C, F', T')
        h = h.permute(0, 3, 1, 2).flatten(2)          # (B, T', C*F'), NII's order
        z, _ = self.blstm1(h)
        z, _ = self.blstm2(z)
        return self.fc((z + h).sum(1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.angle(self.embedding(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)[:, 1]

    def loss(self, cos: torch.Tensor, label: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
        """P2SGrad: MSE between the cosines and the one-hot label (NII's ``P2SGradLoss``); ``pos_weight``
        weighs each bona fide utterance's error (NII trains without weights: ``imbalance: none``)."""
        target = F.one_hot(label.long(), cos.shape[1]).to(cos.dtype)
        per = (cos - target).square().mean(1)
        if pos_weight is None:
            return per.mean()
        w = torch.where(label > 0.5, pos_weight, 1.0).to(cos.dtype)
        return (per * w).sum() / w.sum()


class ResNet18Body(nn.Module):
    """torchvision resnet18 with a one-channel spectrogram stem; no pretrained weights (nothing can be downloaded).

    The body (layer1-4, pooling) is torchvision's resnet18 unchanged; only the stem differs. The
    ImageNet stem (7x7 conv stride 2, then 3x3 max-pool stride 2) divides both axes by 4 before
    layer1, which suits 224x224 photos but leaves a 0.5 s log-mel crop (80 x ~51) at 20 x 13: the
    frame-level vocoder artifacts are averaged over 4 frames and the net memorised the training
    set (demo dev EER 25-30 %). Here the stem is a small 3x3 kernel (as in audio ResNets) with
    stride 4 along frequency and 1 along time, so after the max-pool layer1 sees 10 x 26: twice
    the time resolution for the same compute. On the synthetic demo (dev EER, seeds 0/1) this gave
    15 / 9 %, against 25 / 19 % for stride (2, 1) at twice the compute and 20-40 % for the
    stride-1 stem at four times the compute.
    """

    def __init__(self, emb_dim: int = 128) -> None:
        super().__init__()
        from torchvision.models import resnet18

        # zero-initialised last BN of each residual block: every block starts as the identity, which
        # trains faster from scratch on little data (Goyal et al. 2017)
        net = resnet18(weights=None, num_classes=emb_dim, zero_init_residual=True)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=(4, 1), padding=1, bias=False)  # (freq, time)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _lcnn(head: str, n_features: int, emb_dim: int, dropout: float) -> Countermeasure:
    return Countermeasure(LCNN(n_features, emb_dim, dropout), emb_dim, head)


def _example_lfcc() -> tuple[torch.Tensor]:
    return (torch.randn(3, 1, 60, 40),)


@register_model("lfcc_lcnn", branch="asvspoof", example=_example_lfcc)
def lfcc_lcnn(n_features: int = 60, emb_dim: int = 64, dropout: float = 0.5) -> Countermeasure:
    return _lcnn("sigmoid", n_features, emb_dim, dropout)


@register_model("lfcc_lcnn_ocsoftmax", branch="asvspoof", example=_example_lfcc)
def lfcc_lcnn_ocsoftmax(n_features: int = 60, emb_dim: int = 64, dropout: float = 0.5) -> Countermeasure:
    return _lcnn("ocsoftmax", n_features, emb_dim, dropout)


@register_model("lfcc_lcnn_lstmsum_p2s", branch="asvspoof", example=_example_lfcc)
def lfcc_lcnn_lstmsum_p2s(n_features: int = 60, emb_dim: int = 64, dropout: float = 0.7) -> LCNNLSTMSum:
    return LCNNLSTMSum(n_features, emb_dim, dropout)


@register_model("mel_resnet18", branch="asvspoof", example=lambda: (torch.randn(3, 1, 80, 40),))
def mel_resnet18(n_features: int = 80, emb_dim: int = 128) -> Countermeasure:  # any n_features
    return Countermeasure(ResNet18Body(emb_dim), emb_dim, "sigmoid")


def _example_wave() -> tuple[torch.Tensor]:
    return (torch.randn(2, 6000) * 0.1,)  # 0.375 s: one temporal node left after the encoder's six poolings


@register_model("aasist", branch="asvspoof", example=_example_wave)
def aasist(n_features: int | None = None) -> AASIST:
    """AASIST with the authors' AASIST.conf (297,866 parameters); ``n_features`` (the crop length) is unused."""
    return AASIST(AASIST_CONFIGS["aasist"])


@register_model("aasist_l", branch="asvspoof", example=_example_wave)
def aasist_l(n_features: int | None = None) -> AASIST:
    """AASIST-L with the authors' AASIST-L.conf (85,306 parameters); ``n_features`` is unused."""
    return AASIST(AASIST_CONFIGS["aasist_l"])
