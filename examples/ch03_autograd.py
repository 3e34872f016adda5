"""Chapter 3 (computational graphs, automatic differentiation): the tape, reverse mode, higher
derivatives, and the graph a traced function becomes.

    python3 examples/ch03_autograd.py
"""
import ember


def f(x1, x2):
    return ember.log(x1) + x1 * x2 - ember.sin(x2)


def main() -> None:
    x1 = ember.tensor(2.0, requires_grad=True)
    x2 = ember.tensor(5.0, requires_grad=True)
    y = f(x1, x2)
    print("tape (most recent first):", y.grad_fn, "->", [e for e in y.grad_fn.next_functions if e])
    y.backward()
    print(f"reverse mode: dy/dx1 = {x1.grad.item():.5f} (5.5), dy/dx2 = {x2.grad.item():.5f} (1.71634)")
    print("grad of grad of x^3 at 2:", ember.grad(ember.grad(lambda x: x ** 3))(2.0).item(), "(12)")
    print("the same function as a typed graph:")
    print(ember.make_ir(f)(ember.tensor(2.0), ember.tensor(5.0)))


if __name__ == "__main__":
    main()
