"""Mixed precision against float32 on the harness's GPT (BE-6): train.py runs 200 steps of the
same model, init and batches in float32 and under bf16 autocast, for ember_jit and torch; this
prints each run's median step time and how far the bf16 loss curve strays from the float32 one.

    python bench/amp_curve.py [--steps 200] [--frameworks ember_jit,torch] [--threads 2]

The curve check is the issue's: after 200 steps the bf16 loss (mean of the last 10 steps) is
within 2% of float32's. torch runs from the peers' venv (PEERS_PYTHON, default
../shared/bench/peers-venv/bin/python); a framework that cannot run is reported, not hidden.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--frameworks", default="ember_jit,torch")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--model", default="gpt")
a = ap.parse_args()
peers = os.environ.get("PEERS_PYTHON", os.path.join(HERE, "..", "..", "shared", "bench", "peers-venv", "bin", "python"))


def run(fw: str, amp: str) -> dict:
    py = sys.executable if fw.startswith("ember") else peers
    cmd = [py, os.path.join(HERE, "train.py"), "--model", a.model, "--framework", fw, "--steps", str(a.steps - 2),
           "--warmup", "0", "--threads", str(a.threads), "--amp", amp, "--record-losses"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"status": "error", "error": (p.stderr or p.stdout)[-500:]}
    return json.loads(lines[-1])


for fw in a.frameworks.split(","):
    r32, r16 = run(fw, "none"), run(fw, "bf16")
    if r32.get("status") != "ok" or r16.get("status") != "ok":
        print(f"{fw}: not run ({r32.get('error') or r16.get('error')})")
        continue
    l32, l16 = r32["losses"], r16["losses"]
    end32, end16 = sum(l32[-10:]) / 10, sum(l16[-10:]) / 10
    dev = max(abs(x - y) / abs(x) for x, y in zip(l32, l16))
    print(f"{fw:10s} fp32 {r32['ms_median']:8.1f} ms/step  bf16 {r16['ms_median']:8.1f} ms/step "
          f"(x{r16['ms_median'] / r32['ms_median']:.2f})  loss@{len(l32)}: fp32 {end32:.4f} bf16 {end16:.4f} "
          f"({100 * (end16 - end32) / end32:+.2f}%, max per-step deviation {100 * dev:.2f}%)")
