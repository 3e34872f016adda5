"""Chapter 4 (compiler front end): the IR of a traced function before and after the passes
(dead code, common subexpressions, constant folding, algebraic simplification).

    python3 examples/ch04_compiler_passes.py
"""
import ember


def f(a, b):
    unused = a @ b                # dead code: never reaches an output
    c = a * 5 + a * 5 * b         # one mul(a, 5) after CSE
    return c * (2 * 3) + (4 - 4)  # folded to mul(c, 6)


def main() -> None:
    a, b = ember.ones(4, 4), ember.ones(4, 4)
    print("--- traced")
    print(ember.make_ir(f)(a, b))
    print("--- after the O2 passes")
    print(ember.make_ir(f, opt_level=2)(a, b))


if __name__ == "__main__":
    main()
