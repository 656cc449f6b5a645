"""Reference scores of the authors' AASIST / AASIST-L code, for tests/test_asvspoof_aasist.py.

The test compares this project's AASIST (weights loaded by ``load_pretrained_aasist``) with the
numbers below, which were printed by this script running the authors' own model class:

    python scripts/aasist_reference.py --authors-model <clovaai/aasist checkout>/models/AASIST.py \
        --weights ../shared/anchors/aasist

It builds the authors' ``Model(model_config)`` from AASIST.conf / AASIST-L.conf, loads the published
state dict, and prints ``logits[:, 1]`` (the authors' bona fide score) in eval mode on CPU for the
deterministic waveforms of :func:`reference_waveforms` (1.5 s; ``--samples 64600`` for the authors' crop). The authors' code is not part of this
repository (MIT licence; clone it to re-run this).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

N = 64600  # the authors' nb_samp
TEST_SAMPLES = 24000  # 1.5 s: the test's length (a 64,600-sample forward takes ~4 s per utterance on one core)


def reference_waveforms(n: int = TEST_SAMPLES) -> np.ndarray:
    """(3, n) float32 waveforms on the 16-bit grid (as read from a PCM_16 FLAC), closed form, no RNG.

    0: a voiced-speech-like harmonic glide (f0 110 -> 190 Hz, 12 harmonics, 4 Hz amplitude modulation);
    1: the same with a 3.2 kHz tone and deterministic pseudo-noise from a 32-bit LCG;
    2: a 0.75 s utterance repeated to fill the crop (the authors' ``pad`` of a short file).
    """
    t = np.arange(n) / 16000.0
    f0 = 110.0 + 80.0 * t / t[-1]
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(k * phase) / k for k in range(1, 13)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t))
    state, noise = 12345, np.empty(n)
    for i in range(n):  # LCG (Numerical Recipes constants): the same numbers on every platform
        state = (1664525 * state + 1013904223) % 2**32
        noise[i] = state / 2**31 - 1.0
    mixed = 0.5 * voiced + 0.2 * np.sin(2 * np.pi * 3200.0 * t) + 0.15 * noise
    short = voiced[:12000]
    repeated = np.tile(short, -(-n // len(short)))[:n]
    out = np.stack([0.3 * voiced, 0.5 * mixed, 0.3 * repeated])
    return (np.round(np.clip(out, -1, 1) * 32767) / 32768).astype(np.float32)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors-model", required=True, help="clovaai/aasist models/AASIST.py")
    ap.add_argument("--weights", required=True, help="folder with AASIST.pth, AASIST-L.pth, AASIST.conf, AASIST-L.conf")
    ap.add_argument("--samples", type=int, default=TEST_SAMPLES, help=f"waveform length (the authors' crop: {N})")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("authors_aasist", args.authors_model)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = torch.from_numpy(reference_waveforms(args.samples))
    out = {}
    for name in ("AASIST", "AASIST-L"):
        conf = json.loads((Path(args.weights) / f"{name}.conf").read_text())
        model = mod.Model(conf["model_config"])
        model.load_state_dict(torch.load(Path(args.weights) / f"{name}.pth", map_location="cpu", weights_only=True))
        model.eval()
        with torch.no_grad():
            res = model(x)
        logits = res[1] if isinstance(res, tuple) else res
        out[name] = {"params": sum(p.numel() for p in model.parameters()), "logits": logits.tolist(),
                     "bonafide_score": logits[:, 1].tolist()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
