"""Countermeasure networks, registered by name: LFCC-LCNN (sigmoid or OC-softmax head), mel-ResNet18,
and the raw-waveform AASIST / AASIST-L (:mod:`repropipe.asvspoof.aasist`).

Every model maps its input (a feature map (B, 1, n_features, frames), or a (B, samples)
waveform for the ``wave`` models) to one score per utterance, higher meaning more bona fide (the
ASVspoof convention), so evaluation treats them alike. Each model's ``loss`` matches its head
(``HEAD_OF``); ``ce2`` models also expose ``logits`` (B, 2), which their loss reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repropipe.asvspoof.aasist import AASIST, CONFIGS as AASIST_CONFIGS, load_pretrained_aasist  # noqa: F401
from repropipe.models import register_model

FEATURE_OF = {"lfcc_lcnn": "lfcc", "lfcc_lcnn_ocsoftmax": "lfcc", "mel_resnet18": "mel",
              "aasist": "wave", "aasist_l": "wave"}
HEAD_OF = {"lfcc_lcnn": "sigmoid", "lfcc_lcnn_ocsoftmax": "ocsoftmax", "mel_resnet18": "sigmoid",
           "aasist": "ce2", "aasist_l": "ce2"}


class MFM(nn.Module):
    """Max-Feature-Map: split channels in two halves and keep the element-wise max (Light CNN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.maximum(a, b)


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 2 * cout, k, padding=k // 2), MFM())


class LCNN(nn.Module):
    """The LCNN of the ASVspoof 2019 LFCC-LCNN baseline (Lavrentyeva et al. 2019; Wang & Yamagishi 2021).

    Nine MFM convolutions with max-pooling, then statistics pooling over time (mean and std, so any
    number of frames works) and an MFM fully connected layer to an embedding.
    """

    def __init__(self, n_features: int = 60, emb_dim: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(1, 32, 5), nn.MaxPool2d(2),
            _conv(32, 32, 1), nn.BatchNorm2d(32), _conv(32, 48, 3), nn.MaxPool2d(2), nn.BatchNorm2d(48),
            _conv(48, 48, 1), nn.BatchNorm2d(48), _conv(48, 64, 3), nn.MaxPool2d(2),
            _conv(64, 64, 1), nn.BatchNorm2d(64), _conv(64, 32, 3), nn.BatchNorm2d(32),
            _conv(32, 32, 1), nn.BatchNorm2d(32), _conv(32, 32, 3), nn.MaxPool2d(2),
        )
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
