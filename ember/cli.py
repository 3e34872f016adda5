"""The `ember` command line.

- `ember train`: the flagship job, a CNN trained on Fashion-MNIST (see ember/recipes/fashion_mnist.py);
- `ember launch -n N script.py`: runs a script on N MPI processes (extra ember[mpi]);
- `ember demo`: fits a small MLP with autograd and prints its loss falling;
- `ember serve --model-repository DIR`: serves a model repository over KServe's OIP v2 REST
  (extra ember[serve], see docs/serve.md); `ember serve --flagship CHECKPOINT` serves the CNN
  `ember train` checkpointed, base64 PNG/JPEG in, 10 class probabilities out.
"""
from __future__ import annotations

import argparse
import sys
import time


def demo(steps: int = 300, seed: int = 0) -> list:
    """Fit a 2-64-3 MLP to a 3-class spiral with plain SGD; returns the losses."""
    import ember
    import ember.nn.functional as F
    from ember.datasets import spiral

    x, y = spiral(200, seed=seed)
    ember.manual_seed(seed)
    w1 = (ember.randn(64, 2) * 0.5).requires_grad_()
    b1 = ember.zeros(64, requires_grad=True)
    w2 = (ember.randn(3, 64) * 0.1).requires_grad_()
    b2 = ember.zeros(3, requires_grad=True)
    params = [w1, b1, w2, b2]
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        logits = F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)
        loss = F.cross_entropy(logits, y)
        for p in params:
            p.grad = None
        loss.backward()
        with ember.no_grad():
            for p in params:
                p -= 0.5 * p.grad
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            acc = (logits.argmax(1) == y).float().mean().item()
            print(f"step {step:4d}  loss {losses[-1]:.4f}  accuracy {acc:.3f}")
    print(f"{steps} steps in {time.perf_counter() - t0:.2f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return losses


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from .recipes import fashion_mnist
        fashion_mnist.main(argv[1:])
        return 0
    if argv[:1] == ["launch"]:  # ember launch -n N [--resume] script.py ...: mpiexec (ember[mpi])
        from .distributed import launch
        return launch.main(argv[1:])
    ap = argparse.ArgumentParser(prog="ember", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("train", help="train the flagship CNN on Fashion-MNIST (ember train --help)")
    sub.add_parser("launch", help="run a script on N MPI processes: ember launch -n N [--resume] script.py")
    d = sub.add_parser("demo", help="fit a small MLP with autograd and print the loss falling")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve", help="serve a model repository over KServe's OIP v2 REST (ember[serve])")
    s.add_argument("--model-repository", help="directory of <model>/config.json + versions")
    s.add_argument("--flagship", nargs="?", const="runs/fashion_mnist", metavar="CHECKPOINT",
                   help="serve the CNN `ember train` checkpointed (a file, or the newest in a directory; "
                        "default runs/fashion_mnist) as models fashion_mnist (base64 PNG/JPEG in) and "
                        "fashion_mnist_cnn, written into --model-repository or a temporary directory")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model", action="append", help="load only this model (repeatable; default: all)")
    s.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted (MiB)")
    s.add_argument("--strict-readiness", action="store_true",
                   help="report ready only when every model version loaded")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        demo(args.steps, args.seed)
    if args.cmd == "serve":
        from .serve.server import main as serve_main
        if args.flagship:
            from .serve.flagship import serve_main as flagship_main
            return flagship_main(args, serve_main)
        if not args.model_repository:
            s.error("needs --model-repository DIR (or --flagship CHECKPOINT)")
        return serve_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
