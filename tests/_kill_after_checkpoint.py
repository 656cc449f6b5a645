"""Run one stage (`python tests/_kill_after_checkpoint.py <branch> <step>`) and SIGKILL it right
after its first training checkpoint is written: a stand-in for a node failure or a cancelled job."""

import os
import signal
import sys

import repropipe.training as training

_save = training.save_checkpoint


def _save_then_die(*args, **kwargs):
    _save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


training.save_checkpoint = _save_then_die

if __name__ == "__main__":
    from repropipe.cli import main

    sys.exit(main(sys.argv[1:]))
