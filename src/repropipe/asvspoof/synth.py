"""The synthetic stand-in for ASVspoof 2019 LA, written in the real layout (16 kHz FLAC + CM protocols).

The planted signal, and why it is learnable but not trivial:

* **Bona fide** utterances are a source-filter voice: a harmonic source with a varied pitch contour
  (declination, drift, jitter, shimmer) through speaker-specific formants (vowel targets scaled by
  a per-speaker vocal-tract factor), with breath noise, fricative bursts and pauses.
* **Spoofs** are the same kind of utterance, of the same speakers, passed through a vocoder-like
  process. Each attack system has its own artifact, built from six families: Griffin-Lim phase
  reconstruction, band limiting, spectral-envelope smoothing (lost harmonic fine structure),
  high-band phase noise, frame-rate gain flutter, and log-magnitude quantisation.
  Train and dev use A01-A06 (one family each, mild); eval uses A07-A19, new combinations and
  strengths of the families (A16 and A19 reuse A04 and A06, as in the real set), so eval attacks
  are unseen systems that share artifact *kinds* with training ones.
* Every utterance, bona fide or spoof, then goes through the same random channel (level, spectral
  tilt, white noise floor at 35-50 dB SNR), so level and noise carry no label information.
* About one utterance in ten is bona fide, speakers are disjoint across partitions.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from repropipe.asvspoof.data import ASV_SCORES, PROTOCOL_DIR, PROTOCOL_FILES, SAMPLE_RATE, SPLIT_LETTER, audio_path
from repropipe.asvspoof.data import ATTACKS as ATTACK_IDS
from repropipe.io import atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from repropipe.asvspoof.config import SyntheticConfig

log = logging.getLogger("repropipe.asvspoof.synth")

SR = SAMPLE_RATE
HOP = 80  # control rate of the voice model: 200 frames per second
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]], float)

# Each attack: a list of (family, strength...) applied in order.
ATTACKS: dict[str, list[tuple[Any, ...]]] = {
    # train and dev: one family each
    "A01": [("griffin_lim", 1)],
    "A02": [("lowpass", 5000.0)],
    "A03": [("oversmooth", 0.7, 7)],
    "A04": [("param_noise", 6.0, 9)],
    "A05": [("phase_noise", 1.2, 1000.0)],
    "A06": [("hiss", 4.0, 3000.0)],
    # eval: unseen systems - other strengths and combinations of the families, and two families never
    # seen in training (frame-rate artifacts, waveform filtering)
    "A07": [("griffin_lim", 1), ("lowpass", 7000.0)],
    "A08": [("oversmooth", 0.5, 9), ("flutter", 3.0, 4)],
    "A09": [("param_noise", 4.0, 13), ("hiss", 8.0, 4000.0)],
    "A10": [("griffin_lim", 3)],
    "A11": [("lowpass", 4000.0), ("phase_noise", 0.8, 2000.0)],
    "A12": [("frame_hold", 6)],
    "A13": [("oversmooth", 0.5, 5), ("hiss", 6.0, 2500.0)],
    "A14": [("griffin_lim", 1), ("oversmooth", 0.4, 7)],
    "A15": [("phase_noise", 1.5, 500.0)],
    "A16": [("param_noise", 6.0, 9)],
    "A17": [("comb", 1.5, 0.6), ("param_noise", 3.0, 5)],
    "A18": [("frame_hold", 4), ("lowpass", 6000.0)],
    "A19": [("hiss", 4.0, 3000.0)],
}
SPLIT_ATTACKS = {split: list(ids) for split, ids in ATTACK_IDS.items()}  # the release's: A01-A06, eval A07-A19


# --------------------------------------------------------------------------- the voice


def speaker(rng: np.random.Generator) -> dict[str, float]:
    female = rng.random() < 0.5
    return {"f0": rng.uniform(170, 250) if female else rng.uniform(90, 140),
            "tract": rng.uniform(1.08, 1.22) if female else rng.uniform(0.88, 1.02),
            "tilt": rng.uniform(0.8, 1.4), "breath": rng.uniform(0.02, 0.06)}


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    k = np.hanning(width * 2 + 1)
    k /= k.sum()
    return np.convolve(np.pad(x, width, mode="edge"), k, mode="valid")


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= ((f >= lo) & (f <= hi)).astype(float)
    out = np.fft.irfft(spec, n)
    return out / (out.std() + 1e-9)


def voice(rng: np.random.Generator, spk: dict[str, float], seconds: float) -> np.ndarray:
    """One bona fide utterance: syllables of harmonic voice through moving formants, fricatives, pauses."""
    n = int(seconds * SR)
    nf = n // HOP + 2
    voiced = np.zeros(nf)
    formants = np.zeros((nf, 3))
    fric = np.zeros(nf)
    t = int(rng.integers(0, 10))
    while t < nf:
        if rng.random() < 0.35:  # fricative
            d = int(rng.integers(8, 20))
            fric[t:t + d] = np.hanning(len(fric[t:t + d]) + 2)[1:-1]
            t += d
            if t >= nf:
                break
        d = int(rng.integers(24, 60))  # syllable nucleus, 120-300 ms
        seg = slice(t, min(t + d, nf))
        voiced[seg] = np.sin(np.linspace(0, np.pi, seg.stop - seg.start)) ** 0.5
        formants[seg] = VOWELS[rng.integers(len(VOWELS))] * spk["tract"] * rng.uniform(0.95, 1.05, 3)
        t += d
        if rng.random() < 0.25:
            t += int(rng.integers(10, 30))  # pause
    # formant targets glide between syllables
    filled = np.where(formants[:, 0] > 0, 1.0, 0.0)
    for i in range(3):
        col = formants[:, i]
        idx = np.flatnonzero(filled)
        formants[:, i] = np.interp(np.arange(nf), idx, col[idx]) if idx.size else VOWELS[0, i]
        formants[:, i] = _smooth(formants[:, i], 4)
    f0 = spk["f0"] * (1.1 - 0.2 * np.linspace(0, 1, nf)) * (1 + 0.08 * _smooth(rng.standard_normal(nf), 20) * 4)
    f0 *= 1 + 0.01 * rng.standard_normal(nf)  # jitter
    amp = voiced * (1 + 0.05 * rng.standard_normal(nf))  # shimmer
    # harmonic amplitudes from the formant envelope, at control rate
    k = np.arange(1, int(7900 / f0.min()) + 1)[:, None]
    fk = k * f0[None, :]
    bw = np.array([80.0, 110.0, 160.0])[:, None, None]
    F = np.concatenate([formants.T, (3500 * spk["tract"]) * np.ones((1, nf))])[:, None, :]
    bw = np.concatenate([bw, [[[250.0]]]])
    env = (1.0 / (1 + ((fk[None] - F) / bw) ** 2)).sum(0) * (fk / 100.0) ** (-spk["tilt"] * 0.5)
    env *= fk < 7900
    # to sample rate
    ts = np.arange(n) / HOP
    f0_s = np.interp(ts, np.arange(nf), f0)
    phase = 2 * np.pi * np.cumsum(f0_s) / SR
    # Harmonic k has phase k * phase; wrapping the base phase first keeps k * phase small enough for
    # float32 (exact for integer k), so the hot loop is one float32 multiply-add and one cosine.
    ctrl = torch.from_numpy((env * amp).astype(np.float32))[None]
    amps = torch.nn.functional.interpolate(ctrl, size=n, mode="linear", align_corners=False)[0]
    wrapped = torch.from_numpy(np.mod(phase, 2 * np.pi).astype(np.float32))
    theta = torch.from_numpy(rng.uniform(0, 2 * np.pi, (len(k), 1)).astype(np.float32))
    kk = torch.from_numpy(k.astype(np.float32))
    x = (amps * torch.cos(torch.addcmul(theta, kk, wrapped[None, :]))).sum(0).double().numpy()
    x /= np.abs(x).max() + 1e-9
    amp_s = np.interp(ts, np.arange(nf), amp)
    x += spk["breath"] * amp_s * _band_noise(rng, n, 1500, 7800)
    x += 0.15 * np.interp(ts, np.arange(nf), fric) * _band_noise(rng, n, rng.uniform(2500, 4000), 7800)
    return x


# --------------------------------------------------------------------------- vocoder artifacts

N_FFT, A_HOP = 512, 128
BAND = 13  # STFT bins per ~400 Hz band: the resolution of a 20-filter linear (LFCC) or mid-range mel filterbank


def _stft(x: torch.Tensor) -> torch.Tensor:
    return torch.stft(x, N_FFT, A_HOP, window=torch.hann_window(N_FFT, dtype=x.dtype), return_complex=True)


def _istft(s: torch.Tensor, n: int) -> torch.Tensor:
    return torch.istft(s, N_FFT, A_HOP, window=torch.hann_window(N_FFT, dtype=s.real.dtype), length=n)


def _freqs() -> torch.Tensor:
    return torch.linspace(0, SR / 2, N_FFT // 2 + 1, dtype=torch.float64)[:, None]


def _blur(a: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Hann-weighted moving average of a 2-D (freq, time) array along ``dim`` (edges replicated)."""
    if width <= 1:
        return a
    k = torch.hann_window(width + 2, periodic=False, dtype=a.dtype)[1:-1]
    k = (k / k.sum()).view(1, 1, -1)
    x = a.movedim(dim, -1)
    shape = x.shape
    x = x.reshape(-1, 1, shape[-1])
    x = torch.nn.functional.pad(x, (width // 2, width - 1 - width // 2), mode="replicate")
    return torch.nn.functional.conv1d(x, k).reshape(shape).movedim(-1, dim)


def _envelope(logm: torch.Tensor, lifter: int = 24) -> torch.Tensor:
    """Cepstrally smoothed log-magnitude envelope per frame (harmonic fine structure removed)."""
    cep = torch.fft.irfft(logm, dim=0)
    cep[lifter:-lifter] = 0
    return torch.fft.rfft(cep, dim=0).real[: logm.shape[0]]


def _jitter(g: torch.Generator, spread: float = 0.3) -> float:
    """A per-utterance strength factor in [1 - spread, 1 + spread]: no two spoofs of a system are alike."""
    return 1.0 + spread * (2 * float(torch.rand(1, generator=g, dtype=torch.float64)) - 1)


def _with_logmag(S: torch.Tensor, logm: torch.Tensor, n: int) -> torch.Tensor:
    return _istft(torch.exp(logm) * torch.exp(1j * torch.angle(S)), n)


def artifact(x: np.ndarray, family: str, args: tuple[Any, ...], g: torch.Generator) -> np.ndarray:
    """Apply one vocoder-like artifact family to a waveform (float64, 16 kHz).

    Every family leaves a trace at the resolution of the countermeasure features (bands of a few
    hundred Hz, frames of 10 ms), as real vocoders do, and draws its exact strength per utterance.
    """
    n = len(x)
    xt = torch.from_numpy(x)
    S = _stft(xt)
    mag = S.abs()
    logm = torch.log(mag.clamp_min(1e-9))
    if family == "griffin_lim":  # magnitude kept, phase re-estimated: smeared onsets, phasiness
        iters = max(1, int(round(float(args[0]) * _jitter(g))))
        phase = torch.exp(2j * torch.pi * torch.rand(S.shape, generator=g, dtype=torch.float64))
        for _ in range(iters):
            rebuilt = _stft(_istft(mag * phase, n))
            phase = rebuilt / rebuilt.abs().clamp_min(1e-12)
        out = _istft(mag * phase, n)
    elif family == "lowpass":  # the vocoder's bandwidth: nothing above the cut-off but the channel's noise
        fc = float(args[0]) * _jitter(g, 0.05)
        out = _istft(S * torch.clamp(1 - (_freqs() - fc) / 150.0, 0, 1), n)
    elif family == "oversmooth":  # acoustic-model over-smoothing: flattened formants, sluggish trajectories
        amount, frames = float(args[0]) * _jitter(g), int(args[1])
        env = _envelope(logm)
        level = env.mean(0, keepdim=True)
        target = level + (1 - min(amount, 0.95)) * (_blur(env, frames, 1) - level)
        out = _with_logmag(S, logm - env + target, n)
    elif family == "param_noise":  # noisy generated spectral parameters: band-level gain noise per frame
        sigma_db, width = float(args[0]) * _jitter(g), int(args[1])
        noise = torch.randn(S.shape, generator=g, dtype=torch.float64)
        noise = _blur(_blur(noise, width, 0), 2, 1)
        noise = noise / noise.std().clamp_min(1e-9) * sigma_db / 20 * np.log(10)
        out = _with_logmag(S, logm + noise, n)
    elif family == "frame_hold":  # a low frame rate: each magnitude frame repeated k times (buzzy, robotic)
        k = max(2, int(round(float(args[0]) * _jitter(g, 0.2))))
        idx = (torch.arange(logm.shape[1]) // k) * k
        out = _with_logmag(S, logm[:, idx], n)
    elif family == "flutter":  # frame-rate gain jumps: the level changes in steps every k frames (~10 ms each)
        sigma_db, k = float(args[0]) * _jitter(g), int(args[1])
        steps = torch.randn(-(-S.shape[1] // k), generator=g, dtype=torch.float64) * sigma_db / 20 * np.log(10)
        out = _with_logmag(S, logm + steps.repeat_interleave(k)[: S.shape[1]][None, :], n)
    elif family == "hiss":  # the vocoder's own noise floor above a frequency, steady through pauses
        snr_db, lo = float(args[0]) * _jitter(g, 0.15), float(args[1])
        level = torch.sqrt(torch.mean(mag ** 2)) * 10 ** (-snr_db / 20)
        noise = torch.randn(S.shape, generator=g, dtype=torch.complex128) * level * (_freqs() >= lo)
        out = _istft(S + noise, n)
    elif family == "phase_noise":  # frame-level phase artifacts above a frequency
        sigma, lo = float(args[0]) * _jitter(g), float(args[1])
        noise = sigma * torch.randn(S.shape, generator=g, dtype=torch.float64) * (_freqs() >= lo)
        out = _istft(mag * torch.exp(1j * (torch.angle(S) + noise)), n)
    elif family == "comb":  # waveform filtering: a delayed copy mixed in, a ripple across the spectrum
        delay_ms, gain = float(args[0]) * _jitter(g, 0.2), float(args[1])
        d = max(1, int(round(delay_ms * SR / 1000)))
        y = x.copy()
        y[d:] += gain * x[:-d]
        return y
    else:
        raise ValueError(f"unknown artifact family {family!r}")
    return out.numpy()


def spoof(x: np.ndarray, system: str, g: torch.Generator) -> np.ndarray:
    for family, *args in ATTACKS[system]:
        x = artifact(x, family, tuple(args), g)
    return x


def channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same random recording channel for every class: level, tilt, noise floor."""
    n = len(x)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= (np.maximum(f, 50) / 1000.0) ** rng.uniform(-0.15, 0.15)
    x = np.fft.irfft(spec, n)
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-9) * 10 ** (rng.uniform(-30, -20) / 20)
    noise = rng.standard_normal(n) * np.sqrt(np.mean(x ** 2)) * 10 ** (-rng.uniform(35, 50) / 20)
    return np.clip(x + noise, -1, 1)


# --------------------------------------------------------------------------- the dataset


def _unique_ids(rng: np.random.Generator, k: int, low: int, high: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    while len(out) < k:
        v = int(rng.integers(low, high))
        if v not in taken:
            taken.add(v)
            out.append(v)
    return out


# Synthetic ASV scores, (mean, std) per trial type: a good ASV (EER near 3 %) that accepts a good share of
# spoofs, whose scores lie between the two bona fide classes, as in the organisers' LA files.
ASV_SCORE_MODEL = {"target": (25.0, 17.0), "nontarget": (-40.0, 17.0), "spoof": (-12.0, 14.0)}
NONTARGETS_PER_BONAFIDE = 3  # the real dev and eval files hold several impostor trials per target trial


def protocol_line(speaker: str, utt: str, system: str, key: str) -> str:
    """One CM protocol line as the release writes it: ``LA_0079 LA_T_1138215 - - bonafide``."""
    return f"{speaker} {utt} - {system} {key}\n"


def asv_score_lines(systems: list[str], rng: np.random.Generator) -> str:
    """An ASV score file in the release's format (README.LA.txt, section 4): ``CM_KEY ASV_KEY SCORE``.

    One target and :data:`NONTARGETS_PER_BONAFIDE` nontarget trials per bona fide utterance (CM_KEY
    ``bonafide``) and one spoof trial per spoofed utterance (CM_KEY its attack id, e.g. ``A07``),
    scores with six decimals, grouped target, nontarget, spoof as in the organisers' files.
    """
    n_bona = sum(1 for s in systems if s == "-")
    rows = [("bonafide", "target", rng.normal(*ASV_SCORE_MODEL["target"])) for _ in range(n_bona)]
    rows += [("bonafide", "nontarget", rng.normal(*ASV_SCORE_MODEL["nontarget"]))
             for _ in range(n_bona * NONTARGETS_PER_BONAFIDE)]
    rows += [(s, "spoof", rng.normal(*ASV_SCORE_MODEL["spoof"])) for s in systems if s != "-"]
    return "".join(f"{cm} {asv} {score:.6f}\n" for cm, asv, score in rows)


def zip_la_tree(root: Path, archive: Path) -> Path:
    """``root/LA/...`` as LA.zip in the release's layout: every member under ``LA/``, deflated.

    The features stage reads such an archive in place (:class:`repropipe.asvspoof.data.ZipSource`).
    """
    import zipfile

    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((Path(root) / "LA").rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(root).as_posix())
    return archive


def write_synthetic(out_dir: Path, cfg: SyntheticConfig, seed: int, progress: bool = True) -> dict[str, Any]:
    """Write ``out_dir/LA/...`` in the release's layout and formats and return a summary of what was written.

    FLACs (16 kHz, 16-bit, mono), the three CM protocols and the dev and eval ASV score files.
    """
    import soundfile as sf
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 2019])
    taken_spk: set[int] = set()
    taken_utt: set[int] = set()
    summary: dict[str, Any] = {}
    for s_idx, split in enumerate(("train", "dev", "eval")):
        n = getattr(cfg.utterances, split)
        n_bona = max(2, int(round(n * cfg.bonafide_fraction)))
        spk_ids = _unique_ids(rng, getattr(cfg.speakers, split), 1, 10000, taken_spk)
        speakers = {sid: speaker(rng) for sid in spk_ids}
        utt_nums = _unique_ids(rng, n, 1_000_000, 10_000_000, taken_utt)
        attacks = SPLIT_ATTACKS[split]
        lines: list[str] = []
        systems: list[str] = []
        for i in tqdm(range(n), desc=f"synth {split}", disable=not progress, leave=False):
            urng = np.random.default_rng([seed, s_idx, i])
            g = torch.Generator().manual_seed(seed * 1_000_003 + s_idx * 100_003 + i)
            sid = spk_ids[i % len(spk_ids)]
            utt = f"LA_{SPLIT_LETTER[split]}_{utt_nums[i]}"
            seconds = urng.uniform(*cfg.seconds)
            x = voice(urng, speakers[sid], seconds)
            if i < n_bona:
                system, key = "-", "bonafide"
            else:
                system, key = attacks[(i - n_bona) % len(attacks)], "spoof"
                x = spoof(x, system, g)
            x = channel(x, urng)
            with atomic_path(out_dir / audio_path(split, utt)) as tmp:
                sf.write(tmp, x.astype(np.float32), SR, format="FLAC", subtype="PCM_16")
            lines.append(protocol_line(f"LA_{sid:04d}", utt, system, key))
            systems.append(system)
        order = rng.permutation(len(lines))
        atomic_write_text(out_dir / PROTOCOL_DIR / PROTOCOL_FILES[split], "".join(lines[j] for j in order))
        if split in ASV_SCORES:  # its own generator: the audio and protocols do not depend on it
            atomic_write_text(out_dir / ASV_SCORES[split], asv_score_lines(systems, np.random.default_rng([seed, 2019, s_idx, 1])))
        summary[split] = {"utterances": n, "bonafide": n_bona, "speakers": len(spk_ids), "attacks": attacks}
    atomic_write_json(out_dir / "SYNTHETIC", {"what": "synthetic stand-in for ASVspoof 2019 LA (see "
                                              "repropipe/asvspoof/synth.py for the planted signal)",
                                              "seed": seed, "config": dataclasses.asdict(cfg), "splits": summary,
                                              "attacks": {k: [list(a) for a in v] for k, v in ATTACKS.items()}})
    log.info("event=synthesized dir=%s %s", out_dir, " ".join(f"{k}={v['utterances']}" for k, v in summary.items()))
    return summary
