"""A tiny training run for tests/test_distributed.py, started as one process or by torchrun with several.

`python tests/_train_ddp.py <run_dir> <out.pt> <kill_at> <precision>`: rank r > 0 trains in
``<run_dir>_rank<r>`` (as rank_zero_resumable gives it a private directory); rank 0 SIGKILLs itself
at step ``kill_at`` (0: never), a stand-in for a node failure, and writes the result to ``out.pt``.
The model has no dropout, so one process and two ranks see the same numbers up to float rounding.
"""

import os
import signal
import sys

import torch
from torch.utils.data import TensorDataset

from repropipe import resources
from repropipe.io import atomic_torch_save
from repropipe.training import LoopConfig, Precision, fit, supervised_step


def main(run_dir: str, out: str, kill_at: int, precision: str) -> None:
    w = resources.world()
    g = torch.Generator().manual_seed(123)
    x = torch.randn(95, 5, generator=g)  # 95: the last global batch of 10 is ragged (3 + 2 over two ranks)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.7)
    amp = Precision(precision, torch.device("cpu"))
    step = supervised_step(model, opt, torch.nn.functional.cross_entropy, torch.device("cpu"), sched, precision=amp)

    def die(global_step, _metrics):
        if global_step == kill_at and w.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = LoopConfig(epochs=3, batch_size=10, seed=0, checkpoint_every=4, progress=False, num_workers=0)
    rd = run_dir if w.rank == 0 else f"{run_dir}_rank{w.rank}"
    res = fit(step, TensorDataset(x, y), {"model": model, "optimizer": opt, "scheduler": sched}, cfg, rd,
              callbacks=[die], precision=amp)
    if w.rank == 0:
        atomic_torch_save(out, {"weights": model.state_dict(), "history": res.history, "resumed": res.resumed_from_step,
                                "world_size": w.world_size, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
