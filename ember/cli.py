"""The `ember` command line.

- `ember train`: the flagship job, a CNN trained on Fashion-MNIST (see ember/recipes/fashion_mnist.py);
- `ember launch -n N script.py`: runs a script on N MPI processes (extra ember[mpi]);
- `ember demo`: fits a small MLP with autograd and prints its loss falling;
- `ember serve --model-repository DIR`: serves a model repository over KServe's OIP v2 REST
  (extra ember[serve], see docs/serve.md); `ember serve --flagship CHECKPOINT` serves the CNN
  `ember train` checkpointed, base64 PNG/JPEG in, 10 class probabilities out; `--replicas N`
  runs N server processes behind a router, `--autoscale` scales them on in-flight requests.
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
    s.add_argument("--grpc-port", type=int, help="also serve OIP v2 over gRPC on this port (Triton's: 8001; "
                   "ember[grpc]; default: no gRPC)")
    s.add_argument("--model", action="append", help="load only this model (repeatable; default: all)")
    s.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted (MiB)")
    s.add_argument("--strict-readiness", action="store_true",
                   help="report ready only when every model version loaded")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument("--repository-poll-secs", type=float,
                   help="poll mode: rescan the repository this often, loading new and changed models")
    s.add_argument("--rate-limit", type=float, help="inference requests a second accepted (429 past it)")
    s.add_argument("--burst", type=int, help="requests the rate limit admits at once (default: one second's)")
    s.add_argument("--replicas", type=int, default=0,
                   help="run N server processes behind a router on --port (default: one server, no router)")
    s.add_argument("--routing", default="round_robin",
                   choices=["round_robin", "least_connections", "consistent_hash"])
    s.add_argument("--hash-header", default="x-ember-route-key", help="the header consistent_hash routes on")
    s.add_argument("--autoscale", action="store_true",
                   help="scale replicas on in-flight requests (--target-concurrency per replica)")
    s.add_argument("--target-concurrency", type=float, default=1.0)
    s.add_argument("--min-replicas", type=int, default=1)
    s.add_argument("--max-replicas", type=int, default=4)
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        demo(args.steps, args.seed)
    if args.cmd == "serve":
        if args.grpc_port is not None and (args.replicas > 0 or args.autoscale):
            s.error("--grpc-port is for one server: the router in front of --replicas speaks REST only")
        if args.flagship:
            from .serve.flagship import serve_main as flagship_main
            return flagship_main(args, _serve)
        if not args.model_repository:
            s.error("needs --model-repository DIR (or --flagship CHECKPOINT)")
        return _serve(args)
    return 0


def _serve(args) -> int:
    """One server, or (--replicas, --autoscale) replica processes behind a router."""
    if args.replicas > 0 or args.autoscale:
        from .serve.router import main as router_main
        args.replicas = max(args.replicas, args.min_replicas if args.autoscale else 1)
        fwd = [f for m in args.model or () for f in ("--model", m)] + ["--max-body-mb", str(args.max_body_mb)]
        fwd += ["--repository-poll-secs", str(args.repository_poll_secs)] if args.repository_poll_secs else []
        return router_main(args, fwd + (["--strict-readiness"] if args.strict_readiness else []))
    from .serve.server import main as serve_main
    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
