"""`ember launch -n N [--resume] script.py [args...]`: start N ranks with the MPICH wheel's mpiexec.

The launcher runs ``mpiexec -n N -disable-auto-cleanup python script.py args``. Without
``-disable-auto-cleanup`` Hydra kills every rank the moment one dies, so nobody could report which
one; with it the survivors raise `RankFailureError` naming the dead rank (their liveness watch
sees its pid vanish) and exit, and mpiexec returns non-zero. ``--resume`` sets ``EMBER_RESUME=1``
so that `ember.distributed.load_checkpoint` restores the newest checkpoint. ``--ranks-per-node K``
sets ``EMBER_RANKS_PER_NODE=K``: the process group then treats ranks [0, K), [K, 2K), ... as nodes
(on one machine, simulated ones), which hierarchical all-reduce and the internode byte counts use.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time


def find_mpiexec() -> str | None:
    """The mpiexec beside this Python (the MPICH wheel's), else the first on PATH."""
    here = sysconfig.get_path("scripts")
    for d in (here, os.path.dirname(sys.executable)):
        p = os.path.join(d, "mpiexec")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mpiexec")


def command(n: int, script: str, args=(), extra_mpi=()) -> list:
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise SystemExit("ember launch: no mpiexec found; pip install 'ember[mpi]' (mpi4py + mpich)")
    return [mpiexec, "-n", str(n), "-disable-auto-cleanup", *extra_mpi, sys.executable, script, *args]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ember launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--nproc", type=int, default=2, help="number of ranks")
    ap.add_argument("--resume", action="store_true", help="resume from the newest checkpoint")
    ap.add_argument("--ranks-per-node", type=int, default=None,
                    help="group ranks into nodes of this many (simulated on one machine; DT-19)")
    ap.add_argument("--mpi-arg", action="append", default=[], help="extra argument for mpiexec")
    ap.add_argument("--dry-run", action="store_true", help="print the command only")
    ap.add_argument("script")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = command(a.nproc, a.script, a.args, a.mpi_arg)
    if a.dry_run:
        print(" ".join(cmd))
        return 0
    env = dict(os.environ)
    if a.resume:
        env["EMBER_RESUME"] = "1"
    if a.ranks_per_node is not None:
        if a.ranks_per_node < 1 or a.nproc % a.ranks_per_node:
            ap.error(f"--ranks-per-node must divide -n ({a.nproc}), got {a.ranks_per_node}")
        env["EMBER_RANKS_PER_NODE"] = str(a.ranks_per_node)
    with tempfile.TemporaryDirectory(prefix="ember-launch-") as errdir:
        env["EMBER_ERROR_DIR"] = errdir
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            # survivors of a dead rank report after mpiexec has given up on the job
            deadline = time.monotonic() + float(os.environ.get("EMBER_LAUNCH_REPORT_WAIT", "5"))
            while not os.listdir(errdir) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            for name in sorted(os.listdir(errdir)):
                with open(os.path.join(errdir, name)) as f:
                    print(f"ember launch: {name[:-4]}: {f.read().strip()}", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
