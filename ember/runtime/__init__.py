"""The target-independent half of running a jitted step (book ch. 5.4–6: runtime).

- `units.py`, `fusion.py`: a graph as units (fused groups, row groups, multi-tensor groups,
  equations), the same for every target up to its `fusible` rule;
- `memory.py`: the memory plan (one arena, in-place reuse, pinned outputs);
- `layout.py`: where each value lives (`Ref`) and the stride algebra of views;
- `step.py`: `StepExecutable`, a step over one arena whose units a target lowers (`ember.backend`),
  the rest run on the host (`host.py`); `contexts.py`: a context per overlapping call;
  `profile.py`: the per-kernel table;
- `executor.py`, `arena.py`, `numpy_kernels.py`: the reference executor and the numpy arena
  executor (each equation one numpy call into its planned block).

Nothing here knows C: the CPU target is `ember.backend.cpu`.
"""
