"""NII's LFCC-LCNN-LSTM-sum with P2SGrad (``lfcc_lcnn_lstmsum_p2s``) against a transcription of NII's layers.

The reference below is a transcription (not an import: the project does not vendor NII's code) of
nii-yamagishilab/project-NN-Pytorch-scripts, project/03-asvspoof-mega/lfcc-lcnn-lstmsum-p2s/02/model.py
(``m_transform``, ``m_before_pooling``, ``m_output_act``, ``m_angle`` and ``_compute_embedding`` for
``lfcc_dim = 20 * 3``, ``v_emd_dim = 64``, two classes), sandbox/block_nn.py (``MaxFeatureMap2D``,
``BLSTMLayer``) and core_modules/p2sgrad.py (``P2SActivationLayer``, ``P2SGradLoss``).
"""

from __future__ import annotations

import pytest
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


# --- NII's LFCC front end ---------------------------------------------------------------------------------
# A transcription of sandbox/util_frontend.py (trimf, delta, LFCC.__init__ and LFCC.forward) as
# lfcc-lcnn-lstmsum-p2s builds it: LFCC(320, 160, 512, 16000, 20, with_energy=True); LinearDCT(20, 'dct',
# norm='ortho') of sandbox/util_dsp.py is the orthonormal DCT-II matrix, taken from scipy here.

def nii_trimf(x, a, b, c):
    y = torch.zeros_like(x, dtype=torch.float32)
    if a < b:
        i = torch.logical_and(a < x, x < b)
        y[i] = (x[i] - a) / (b - a)
    if b < c:
        i = torch.logical_and(b < x, x < c)
        y[i] = (c - x[i]) / (c - b)
    y[x == b] = 1
    return y


def nii_delta(x):
    length = x.shape[1]
    x_temp = torch.nn.functional.pad(x.unsqueeze(1), (0, 0, 1, 1), "replicate").squeeze(1)
    return -1 * x_temp[:, 0:length] + x_temp[:, 2:]


def nii_lfcc(x, fl=320, fs=160, fn=512, sr=16000, filter_num=20):
    import numpy as np
    from scipy.fft import dct

    f = (sr / 2) * torch.linspace(0, 1, fn // 2 + 1)
    bands = torch.linspace(min(f), max(f), filter_num + 2)
    fb = torch.zeros([fn // 2 + 1, filter_num])
    for idx in range(filter_num):
        fb[:, idx] = nii_trimf(f, bands[idx], bands[idx + 1], bands[idx + 2])
    dct_w = torch.from_numpy(dct(np.eye(filter_num), norm="ortho").T).float()  # LinearDCT's weight
    x = x.clone()
    x[:, 1:] = x[:, 1:] - 0.97 * x[:, 0:-1]
    x_stft = torch.stft(x, fn, fs, fl, window=torch.hamming_window(fl), onesided=True, pad_mode="constant",
                        return_complex=True)
    sp_amp = torch.norm(torch.view_as_real(x_stft), 2, -1).pow(2).permute(0, 2, 1).contiguous()
    fb_feature = torch.log10(torch.matmul(sp_amp, fb) + torch.finfo(torch.float32).eps)
    lfcc = torch.nn.functional.linear(fb_feature, dct_w)
    energy = torch.log10((sp_amp / fn).sum(axis=2) + torch.finfo(torch.float32).eps)
    lfcc[:, :, 0] = energy
    d = nii_delta(lfcc)
    return torch.cat((lfcc, d, nii_delta(d)), 2)


def _waves(n=3, samples=5600):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 16000
    tone = torch.sin(2 * torch.pi * torch.tensor([[180.0], [440.0], [3100.0]])[:n] * t)
    return (0.3 * tone + 0.05 * torch.randn(n, samples, generator=g)).float()


def test_nii_front_end_options_give_niis_lfcc():
    from repropipe.asvspoof.features import NII_FRONT_END, Extractor, FeatureConfig

    wav = _waves()
    ref = nii_lfcc(wav)                                                   # (B, frames, 60)
    mine = Extractor(FeatureConfig(seconds=0.35, **NII_FRONT_END), ("lfcc",))(wav)["lfcc"].mT
    assert mine.shape == ref.shape == (3, 36, 60)
    assert torch.allclose(mine, ref, atol=1e-5, rtol=1e-6), (mine - ref).abs().max()  # measured 2.7e-6
    # and each option matters: the torchaudio defaults are far from it
    assert not torch.allclose(Extractor(FeatureConfig(seconds=0.35), ("lfcc",))(wav)["lfcc"].mT, ref, atol=1e-1)
    for key, default in (("pre_emphasis", 0.0), ("window", "hann"), ("stft_pad", "reflect"), ("lfcc_c0", "c0"),
                         ("delta", "torchaudio")):
        off = Extractor(FeatureConfig(seconds=0.35, **{**NII_FRONT_END, key: default}), ("lfcc",))(wav)["lfcc"].mT
        assert not torch.allclose(off, ref, atol=1e-3), key


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from repropipe.asvspoof.config import SyntheticConfig
    from repropipe.asvspoof.synth import write_synthetic
    from repropipe.config import parse

    root = tmp_path_factory.mktemp("raw")
    write_synthetic(root, parse(SyntheticConfig, {"utterances": {"train": 12, "dev": 6, "eval": 6},
                                                  "speakers": {"train": 2, "dev": 1, "eval": 1},
                                                  "bonafide_fraction": 0.5, "seconds": [0.3, 0.4]}),
                    seed=0, progress=False)
    return root


def test_p2sgrad_model_trains_and_scores_through_the_shared_loop(raw, tmp_path):
    """train_one's step reads ``logits`` for the p2s head; the score is the bona fide cosine, in [-1, 1]."""
    from repropipe.asvspoof import data
    from repropipe.asvspoof.features import FeatureConfig, extract_split
    from repropipe.asvspoof.train import load_trained, score, train_one

    src = data.open_source(raw)
    feat = tmp_path / "feat"
    idx = [extract_split(src, data.read_protocol(src, s), s, feat, FeatureConfig(seconds=0.5), ("lfcc",),
                         shard_size=8, progress=False) for s in ("train", "dev")]
    import pandas as pd

    pd.concat(idx, ignore_index=True).to_parquet(feat / "index.parquet")
    from repropipe.asvspoof.config import TrainConfig
    from repropipe.config import parse

    p = parse(TrainConfig, {"models": ["lfcc_lcnn_lstmsum_p2s"], "seeds": [0], "epochs": 2, "batch_size": 4,
                            "lr": 0.0003, "weight_decay": 0.0, "per_model": None, "imbalance": "none",
                            "select_on_dev": True, "shuffled_label_control": False, "checkpoint_every": 0,
                            "augment": {"gain_db": 0, "noise_std": 0, "spec_freq_mask": 0, "spec_time_mask": 0}})
    summary = train_one("lfcc_lcnn_lstmsum_p2s", 0, p, feat, tmp_path / "run", torch.device("cpu"), {})
    assert summary["params"] == 275_968 and len(summary["history"]) == 2
    assert all(0.0 <= h["loss"] <= 4.0 for h in summary["history"])  # MSE of cosines against one-hot: at most 4
    model, norm, _ = load_trained(tmp_path / "run", torch.device("cpu"))
    from repropipe.asvspoof.features import load_features

    x, _ = load_features(feat, "dev", "lfcc")
    s = score(model, x, norm, torch.device("cpu"))
    assert s.shape == (len(x),) and (abs(s) <= 1).all()


def test_frames_crop_the_spectral_kinds_and_seconds_the_waveform(raw, tmp_path):
    from repropipe.asvspoof import data
    from repropipe.asvspoof.features import FeatureConfig, extract_split, load_features

    assert FeatureConfig(frames=750).spectral_samples == 749 * 160  # NII's 750-frame crop: 7.49 s
    src = data.open_source(raw)
    df = data.read_protocol(src, "eval")
    out = {}
    for name, cfg in (("frames", FeatureConfig(seconds=0.25, frames=70)), ("seconds", FeatureConfig(seconds=0.69))):
        idx = extract_split(src, df, "eval", tmp_path / name, cfg, ("lfcc", "wave"), shard_size=10, progress=False)
        idx.to_parquet(tmp_path / name / "index.parquet")
        out[name] = {k: load_features(tmp_path / name, "eval", k)[0] for k in ("lfcc", "wave")}
    assert out["frames"]["lfcc"].shape[-1] == 70 and out["frames"]["wave"].shape[-1] == 4000
    # the LFCC of a 70-frame crop is that of the (70 - 1) x 160-sample crop, repeat-padded like any crop
    assert torch.equal(out["frames"]["lfcc"], out["seconds"]["lfcc"])
    assert torch.equal(out["frames"]["wave"], out["seconds"]["wave"][:, :4000])
