"""Chapters 5 and 6 (back end, runtime, hardware): a whole training step compiled by ember.jit
into one native function. It shows the memory plan, the fused units and a per-kernel time table,
then runs the step from several threads.

    python3 examples/ch05_native_step.py [--report]
"""
import argparse
import threading

import ember
import ember.nn as nn
import ember.nn.functional as F


def main(report: bool) -> None:
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128), nn.Linear(128, 10))
    opt = ember.optim.AdamW(model.parameters(), lr=1e-3)

    @ember.jit
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    x, y = ember.randn(32, 64), ember.randint(0, 10, (32,))
    for i in range(5):
        print(f"step {i}: loss {step(x, y):.4f}")
    print(step.explain)
    if report:  # every stage: traced IR, passes, memory plan, units, generated C, kernel times
        print(ember.inspect(step, x, y))

    @ember.jit
    def predict(x):
        return model(x).argmax(-1)
    with ember.no_grad():
        want = predict(x)
        threads = [threading.Thread(target=lambda: [predict(x) for _ in range(50)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("4 threads x 50 inference calls agree:", bool((predict(x) == want).all()))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", action="store_true")
    main(ap.parse_args().report)
