"""`python -m repropipe asvspoof bench-features`: feature throughput, FLAC decode to stored shard, on one core.

Throughput is seconds of audio per second of wall time on one thread (x real time per core),
printed beside the ceiling measured in the same run: FLAC decode plus LFCC alone, one utterance
at a time. The utterances are synthetic voices written to a temporary directory first (not timed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from repropipe.stages import tool


def _arguments(p: Any) -> None:
    p.add_argument("--utterances", type=int, default=120, help="number of utterances (default 120)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each utterance and of the crop (default 4)")
    p.add_argument("--batch-size", type=int, default=64, help="utterances per STFT batch (default 64)")
    p.add_argument("--kinds", default="lfcc,mel", help="feature kinds to store (default lfcc,mel)")


def _write_corpus(root: Path, n: int, seconds: float) -> Any:
    import numpy as np
    import pandas as pd
    import soundfile as sf

    from repropipe.asvspoof import synth
    from repropipe.asvspoof.data import audio_path

    rows = []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        x = synth.channel(synth.voice(rng, synth.speaker(rng), seconds), rng)
        rel = audio_path("eval", f"LA_E_{1000000 + i}")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, x.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        rows.append(("LA_0001", f"LA_E_{1000000 + i}", "-", "bonafide", 1, rel))
    return pd.DataFrame(rows, columns=["speaker_id", "utt_id", "system_id", "key", "label", "path"])


@tool("asvspoof", "bench-features", help="Measure feature-extraction throughput (x real time per core) "
      "from FLAC decode to stored shard, beside the decode+LFCC ceiling.", arguments=_arguments)
def bench(args: Any) -> int:
    import torch
    import torchaudio.transforms as T

    from repropipe.asvspoof.data import DirSource, read_audio
    from repropipe.asvspoof.features import FeatureConfig, extract_split

    torch.set_num_threads(1)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        df = _write_corpus(root, args.utterances, args.seconds)
        audio_s = args.utterances * args.seconds
        src = DirSource(root)
        lfcc = T.LFCC(16000, n_filter=20, n_lfcc=20, speckwargs={"n_fft": 512, "win_length": 320, "hop_length": 160})
        t0 = time.perf_counter()
        with torch.no_grad():
            for rel in df.path:
                x, _ = read_audio(src, rel)
                lfcc(torch.from_numpy(x))
        ceiling = audio_s / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        extract_split(src, df, "eval", root / "out", FeatureConfig(seconds=args.seconds), kinds,
                      shard_size=10_000, batch_size=args.batch_size, progress=False)
        e2e = audio_s / (time.perf_counter() - t0)
    print(f"bench-features: {args.utterances} utterances x {args.seconds:g} s, 1 thread, kinds={','.join(kinds)}")
    print(f"  ceiling (FLAC decode + LFCC, per utterance): {ceiling:8.0f} x real time per core")
    print(f"  end to end (decode, crop, {'+'.join(kinds)}, float16 shard written): {e2e:8.0f} x real time per core")
    print(f"  end to end / ceiling: {e2e / ceiling:.2f}  (goal: >= 1000 x real time per core)")
    return 0
