"""The loop-nest kernel IR: loops with schedule knobs around scalar statements.

A kernel is a list of nodes: `Loop(var, extent, body)` and `Stmt(code)`, statements being scalar
C-syntax expressions and assignments (the same scalar syntax a CUDA renderer would emit). The
schedule is data on each loop, not code:

- `parallel`: the loop's iterations are shared among the threads of the step's parallel region
  (OpenMP worksharing with a static schedule, so each thread's share is fixed run to run);
- `vectorize`: the iterations may run in SIMD lanes (`omp simd`: no reassociation is implied);
- `start`: the first iteration (a thread's own range starts at `lo`).

`render(nodes)` writes C. A parallel loop must sit inside the step's `omp parallel` region.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stmt:
    """One C statement (or a `{`-free block of them) at its place in the nest."""

    code: str


@dataclass
class Loop:
    """`for (var = 0; var < extent; var++) body`, with its schedule knobs."""

    var: str
    extent: object  # int or a C expression
    body: list = field(default_factory=list)
    parallel: bool = False
    vectorize: bool = False
    start: object = 0


def render(nodes: list, indent: str = "    ") -> list:
    """C lines for a list of nodes."""
    out = []
    for node in nodes:
        if isinstance(node, Stmt):
            out.extend(indent + line for line in node.code.split("\n"))
            continue
        if node.parallel and node.vectorize:
            out.append(f"{indent}#pragma omp for simd schedule(simd: static)")
        elif node.parallel:
            out.append(f"{indent}#pragma omp for schedule(static)")
        elif node.vectorize:
            out.append(f"{indent}#pragma omp simd")
        v = node.var
        out.append(f"{indent}for (int64_t {v} = {node.start}; {v} < {node.extent}; {v}++) {{")
        out.extend(render(node.body, indent + "    "))
        out.append(f"{indent}}}")
    return out
