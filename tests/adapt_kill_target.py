"""Subprocess target for the resume test: ``zsr adapt`` that SIGKILLs itself once a step is done.

Usage: ZSR_HOME=... python -m tests.adapt_kill_target CORPUS KILL_AT_STEP
"""

from __future__ import annotations

import os
import signal
import sys

from tasks.adapt.examples import AdaptConfig
from tasks.workspace import Workspace

# What the test trains: high learning rate so a tiny model moves in a few steps; a checkpoint every 4.
CONFIG = AdaptConfig(max_steps=8, batch_size=8, learning_rate=1e-2, checkpoint_steps=4, dev_share=0.2)


def main() -> None:
    corpus, kill_at = sys.argv[1], int(sys.argv[2])

    def progress(step: int, _total: int) -> None:
        print(f"step {step}", flush=True)
        if step >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    Workspace.open().adapt(corpus, CONFIG, progress=progress)
    print("done", flush=True)


if __name__ == "__main__":
    main()
