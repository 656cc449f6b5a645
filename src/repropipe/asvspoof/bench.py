"""`python -m repropipe asvspoof bench-features`: feature throughput, FLAC decode to stored shard, on one core.

Throughput is seconds of audio per second on one thread (x real time per core). Three things are
timed in turns, ``--repeats`` times each (after one untimed warm-up pass), and their medians printed:

* decode: :func:`repropipe.asvspoof.data.read_audio` alone, the floor under everything else;
* ceiling: decode plus ``torchaudio.transforms.LFCC`` (built once), one utterance at a time, the
  reference the stage's LFCC is tested against;
* end to end: :func:`repropipe.asvspoof.features.extract_split`, the very function the
  ``asvspoof_features`` stage runs: protocol rows in, decode, crop/pad, LFCC + deltas and log-mel,
  float16 shards written atomically.

Each is given by wall time (what a user waits for) and by the process's CPU time: on a machine
other jobs are loading, CPU time is the steadier estimate of what one idle core does. The
utterances are synthetic voices written to a temporary directory (or LA.zip with ``--zip``) first,
not timed. End to end can beat the ceiling: the stage shares one STFT between LFCC and mel and
skips the transform's slow complex ``abs``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from repropipe.stages import tool


def _arguments(p: Any) -> None:
    p.add_argument("--utterances", type=int, default=120, help="number of utterances (default 120)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each utterance and of the crop (default 4)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="utterances per STFT batch (default: the stage's, extract_split's default)")
    p.add_argument("--kinds", default="lfcc,mel", help="feature kinds to store (default lfcc,mel)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes of each measurement; medians printed (default 5)")
    p.add_argument("--zip", action="store_true", help="read the FLACs from a deflated LA.zip, as on the real set")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, and end-to-end worker processes (default 1: per-core numbers)")


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


def _zip_source(root: Path, df: Any) -> Any:
    """The corpus as a deflated LA.zip read in place (ZipSource wants a protocol member to find LA/)."""
    import zipfile

    from repropipe.asvspoof.data import ZipSource, protocol_path

    archive = root / "LA.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(protocol_path("train"), "")
        for rel in df.path:
            zf.write(root / rel, rel)
    return ZipSource(archive)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


@tool("asvspoof", "bench-features", help="Measure feature-extraction throughput (x real time per core) "
      "from FLAC decode to stored shard, beside the decode+LFCC ceiling.", arguments=_arguments)
def bench(args: Any) -> int:
    import torch
    import torchaudio.transforms as T

    from repropipe.asvspoof.data import DirSource, read_audio
    from repropipe.asvspoof.features import FeatureConfig, extract_split

    torch.set_num_threads(getattr(args, "threads", 1))
    kinds = tuple(k for k in args.kinds.split(",") if k)
    cfg = FeatureConfig(seconds=args.seconds)
    win, hop = int(16000 * cfg.win_ms / 1000), int(16000 * cfg.hop_ms / 1000)
    lfcc = T.LFCC(16000, n_filter=cfg.n_lfcc, n_lfcc=cfg.n_lfcc,
                  speckwargs={"n_fft": cfg.n_fft, "win_length": win, "hop_length": hop})
    batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        df = _write_corpus(root, args.utterances, args.seconds)
        src = _zip_source(root, df) if args.zip else DirSource(root)
        audio_s = args.utterances * args.seconds
        runs = 0

        def decode() -> None:
            for rel in df.path:
                read_audio(src, rel)

        def ceiling() -> None:
            with torch.no_grad():
                for rel in df.path:
                    lfcc(torch.from_numpy(read_audio(src, rel)[0]))

        def end_to_end() -> None:
            nonlocal runs
            runs += 1
            extract_split(src, df, "eval", root / f"out{runs}", cfg, kinds, shard_size=10_000, progress=False,
                          processes=getattr(args, "threads", 1), **batch)

        jobs = {"decode": decode, "ceiling": ceiling, "e2e": end_to_end}
        load0 = os.getloadavg()[0]
        for fn in jobs.values():  # warm-up: imports, allocator, page cache
            fn()
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in jobs}
        for _ in range(max(1, args.repeats)):
            for name, fn in jobs.items():
                times[name].append(_timed(fn))
        load1 = os.getloadavg()[0]

    def xrt(name: str, i: int) -> float:
        return audio_s / statistics.median(t[i] for t in times[name])

    where = "deflated LA.zip" if args.zip else "directory of FLACs"
    print(f"bench-features: {args.utterances} utterances x {args.seconds:g} s from a {where}, "
          f"{getattr(args, 'threads', 1)} thread(s), "
          f"kinds={','.join(kinds)}, median of {max(1, args.repeats)} passes, load average {load0:.2f} -> {load1:.2f}")
    print(f"  {'x real time per core':44s} {'wall':>7s} {'cpu':>7s}")
    rows = [("decode alone (soundfile)", "decode"),
            ("ceiling: decode + torchaudio LFCC, per utt", "ceiling"),
            (f"end to end: decode, crop, {'+'.join(kinds)}, f16 shard", "e2e")]
    for label, name in rows:
        print(f"  {label:44s} {xrt(name, 0):7.0f} {xrt(name, 1):7.0f}")
    print(f"  end to end / ceiling: {xrt('e2e', 0) / xrt('ceiling', 0):.2f} wall, "
          f"{xrt('e2e', 1) / xrt('ceiling', 1):.2f} cpu  (goal: end to end >= 1000 x real time per core)")
    return 0


def _thread_arguments(p: Any) -> None:
    p.add_argument("--params", default="params.yaml",
                   help="take asvspoof.synthetic, .features and .train from this file (default params.yaml)")
    p.add_argument("--utterances", type=int, default=None,
                   help="synthetic utterances in all, split as in --params (default: the params' own counts)")
    p.add_argument("--threads", default="1,2", help="CPU budgets to compare, the first is the baseline (default 1,2)")
    p.add_argument("--model", default="lfcc_lcnn", help="the model the train stage is timed on (default lfcc_lcnn)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs per timed pass (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per budget, interleaved; medians (default 3)")


@tool("asvspoof", "bench-threads", help="Time the asvspoof_features and asvspoof_train stages' work at 1 and 2 CPUs "
      "(REPROPIPE_THREADS) and print the speedups.", arguments=_thread_arguments)
def bench_threads(args: Any) -> int:
    # imported by name: this module is part of every asvspoof stage's code, the training code this tool
    # times is not (a model edit must not re-run asvspoof_download), and codedeps follows only import statements
    import importlib

    return importlib.import_module("repropipe.asvspoof.bench_threads").run(args)
