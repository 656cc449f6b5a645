"""NII's LFCC-LCNN-LSTM-sum with P2SGrad (``lfcc_lcnn_lstmsum_p2s``) against a transcription of NII's layers.

The reference below is a transcription (not an import: the project does not vendor NII's code) of
nii-yamagishilab/project-NN-Pytorch-scripts, project/03-asvspoof-mega/lfcc-lcnn-lstmsum-p2s/02/model.py
(``m_transform``, ``m_before_pooling``, ``m_output_act``, ``m_angle`` and ``_compute_embedding`` for
``lfcc_dim = 20 * 3``, ``v_emd_dim = 64``, two classes), sandbox/block_nn.py (``MaxFeatureMap2D``,
``BLSTMLayer``) and core_modules/p2sgrad.py (``P2SActivationLayer``, ``P2SGradLoss``).
"""

from __future__ import annotations

import torch
from torch import nn

from repropipe.asvspoof.models import LCNNLSTMSum
from repropipe.models import build_model


class NiiMFM(nn.Module):  # sandbox/block_nn.py MaxFeatureMap2D(max_dim=1)
    def forward(self, x):
        shape = list(x.shape)
        shape[1] //= 2
        shape.insert(1, 2)
        return x.view(*shape).max(1)[0]


class NiiBLSTM(nn.Module):  # sandbox/block_nn.py BLSTMLayer
    def __init__(self, i, o):
        super().__init__()
        self.l_blstm = nn.LSTM(i, o // 2, bidirectional=True)

    def forward(self, x):
        return self.l_blstm(x.permute(1, 0, 2))[0].permute(1, 0, 2)


class NiiP2S(nn.Module):  # core_modules/p2sgrad.py P2SActivationLayer
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.Tensor(i, o))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x):
        w = self.weight.renorm(2, 1, 1e-5).mul(1e5)
        return (x.mm(w) / x.pow(2).sum(1).pow(0.5).view(-1, 1)).clamp(-1, 1)


class NiiLstmSumP2S(nn.Module):
    """model.py's sub-model for one front end; input (batch, frames, 60) LFCC, as NII's front end returns it."""

    def __init__(self, lfcc_dim=60, emb=64):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, affine=False)  # noqa: E731
        self.m_transform = nn.Sequential(
            nn.Conv2d(1, 64, [5, 5], 1, padding=[2, 2]), NiiMFM(), nn.MaxPool2d([2, 2], [2, 2]),
            nn.Conv2d(32, 64, [1, 1], 1, padding=[0, 0]), NiiMFM(), bn(32),
            nn.Conv2d(32, 96, [3, 3], 1, padding=[1, 1]), NiiMFM(), nn.MaxPool2d([2, 2], [2, 2]), bn(48),
            nn.Conv2d(48, 96, [1, 1], 1, padding=[0, 0]), NiiMFM(), bn(48),
            nn.Conv2d(48, 128, [3, 3], 1, padding=[1, 1]), NiiMFM(), nn.MaxPool2d([2, 2], [2, 2]),
            nn.Conv2d(64, 128, [1, 1], 1, padding=[0, 0]), NiiMFM(), bn(64),
            nn.Conv2d(64, 64, [3, 3], 1, padding=[1, 1]), NiiMFM(), bn(32),
            nn.Conv2d(32, 64, [1, 1], 1, padding=[0, 0]), NiiMFM(), bn(32),
            nn.Conv2d(32, 64, [3, 3], 1, padding=[1, 1]), NiiMFM(), nn.MaxPool2d([2, 2], [2, 2]),
            nn.Dropout(0.7))
        w = (lfcc_dim // 16) * 32
        self.m_before_pooling = nn.Sequential(NiiBLSTM(w, w), NiiBLSTM(w, w))
        self.m_output_act = nn.Linear(w, emb)
        self.m_angle = NiiP2S(emb, 2)

    def forward(self, x):  # _compute_embedding + _compute_score
        h = self.m_transform(x.unsqueeze(1))
        h = h.permute(0, 2, 1, 3).contiguous()
        h = h.view(h.shape[0], h.shape[1], -1)
        return self.m_angle(self.m_output_act((self.m_before_pooling(h) + h).sum(1)))


def nii_p2sgrad_loss(score, target):  # core_modules/p2sgrad.py P2SGradLoss
    index = torch.zeros_like(score)
    index.scatter_(1, target.long().view(-1, 1), 1)
    return nn.MSELoss()(score, index)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_equals_niis():
    ours = build_model("lfcc_lcnn_lstmsum_p2s", n_features=60)
    assert _count(ours) == _count(NiiLstmSumP2S()) == 275_968
    assert [p.shape for p in ours.parameters()] == [p.shape for p in NiiLstmSumP2S().parameters()]  # square kernels


def _copy_from_nii(ours: LCNNLSTMSum, nii: NiiLstmSumP2S) -> None:
    """NII's weights into ours; conv kernels transposed (NII's input is (frames, features), ours the reverse)."""
    with torch.no_grad():
        for a, b in zip(ours.parameters(), nii.parameters(), strict=True):
            a.copy_(b.transpose(-1, -2) if b.dim() == 4 else b)


def test_copied_weights_give_niis_scores_and_loss():
    torch.manual_seed(0)
    nii, ours = NiiLstmSumP2S().eval(), build_model("lfcc_lcnn_lstmsum_p2s", n_features=60).eval()
    _copy_from_nii(ours, nii)
    x = torch.randn(3, 87, 60)  # NII's layout: (batch, frames, 60); 87 frames: uneven /16 as real lengths are
    with torch.no_grad():
        ref = nii(x)
        mine = ours.logits(x.transpose(1, 2)[:, None])
        assert torch.allclose(mine, ref, atol=1e-5), (mine - ref).abs().max()
        assert torch.allclose(ours(x.transpose(1, 2)[:, None]), ref[:, 1], atol=1e-5)  # score = bona fide cosine
        y = torch.tensor([1, 0, 1])
        assert torch.allclose(ours.loss(mine, y), nii_p2sgrad_loss(ref, y), atol=1e-6)
    # in training mode (dropout off so both draw nothing) the batch norms agree too
    ours.train().drop.p = 0.0
    nii.train().m_transform[-1].p = 0.0
    assert torch.allclose(ours.logits(x.transpose(1, 2)[:, None]), nii(x), atol=1e-5)


def test_weighted_p2sgrad_loss_weighs_bona_fide_errors():
    cos = torch.tensor([[0.1, 0.9], [0.8, -0.2]])
    y = torch.tensor([1, 0])
    per = torch.tensor([(0.1 ** 2 + 0.1 ** 2) / 2, (0.2 ** 2 + 0.2 ** 2) / 2])
    m = build_model("lfcc_lcnn_lstmsum_p2s")
    assert torch.allclose(m.loss(cos, y), per.mean())
    assert torch.allclose(m.loss(cos, y, pos_weight=3.0), (3 * per[0] + per[1]) / 4)
