"""``moe-studio train --nproc N``: the ranks of one machine started by torch's own
launcher (``python -m torch.distributed.run``), and the command that does the same
on a cluster. No torch import here: the launching process only waits.

The launcher runs in a session of its own, so a Ctrl+C in the terminal reaches the
ranks once, through it (torchrun sends SIGTERM to every rank when it is signalled):
each rank asks for a stop, the ranks agree on the step to stop after (rank 0's
broadcast between steps), and the run ends stopped with a checkpoint. A second
Ctrl+C is forwarded too, and the ranks exit at once.
"""
from __future__ import annotations

import shlex
import signal
import subprocess
import sys


def torchrun_command(nproc: int, train_args: list[str], *, nnodes: int | None = None,
                     endpoint: str | None = None, python: str | None = None) -> list[str]:
    """The command that trains ``train_args`` (the arguments after ``moe-studio train``)
    on ``nproc`` processes of this machine, or, with ``nnodes`` and ``endpoint``
    (host:port of the rendezvous), on each node of a cluster."""
    launcher = [python, "-m", "torch.distributed.run"] if python else ["torchrun"]
    if nnodes and nnodes > 1:
        where = [f"--nnodes={nnodes}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={endpoint or 'HOST:29500'}", "--rdzv-id=moe-studio"]
    else:
        where = ["--standalone"]
    return launcher + where + [f"--nproc-per-node={nproc}", "-m", "moe_studio", "train"] + train_args


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def launch(nproc: int, train_args: list[str]) -> int:
    """Run ``train_args`` on ``nproc`` local ranks; the launcher's exit status."""
    cmd = torchrun_command(nproc, train_args, python=sys.executable)
    proc = subprocess.Popen(cmd, start_new_session=True)

    def forward(signum, frame):
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old[s] = signal.signal(s, forward)
        except ValueError:   # not the main thread
            break
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
