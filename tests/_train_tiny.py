"""A tiny training run for tests/test_training.py, run in a subprocess so it can be SIGKILLed."""

import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from repropipe.training import LoopConfig, fit, supervised_step


def main(run_dir: str, kill_at: int, out: str) -> None:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.7)
    step = supervised_step(model, opt, torch.nn.functional.cross_entropy, torch.device("cpu"), sched)

    def die(global_step, _metrics):
        if global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def grid(global_step, _metrics):  # a side output of some steps, like the GAN's sample grids
        if global_step % 3 == 0:
            (Path(run_dir) / "grids").mkdir(exist_ok=True)
            (Path(run_dir) / "grids" / f"{global_step:03d}.txt").write_text("grid")

    cfg = LoopConfig(epochs=4, batch_size=10, seed=0, checkpoint_every=3, progress=False)
    res = fit(step, TensorDataset(x, y), {"model": model, "optimizer": opt, "scheduler": sched}, cfg, run_dir,
              callbacks=[die, grid])
    torch.save({"weights": model.state_dict(), "history": res.history, "resumed": res.resumed_from_step}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
