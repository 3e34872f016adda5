"""Layer 2: the primitive registry. Importing this package registers every built-in primitive."""
from . import core, elementwise, reductions, shape, linalg, indexing, creation, conv, decompositions, sorting, complex, fft, packed  # noqa: F401
from .core import REGISTRY, Aval, P, Primitive, bind, register  # noqa: F401

# VJPs that only need operand shapes: their nodes keep no reference to the operand's data
core.set_vjp_inputs({
    "add": (), "sub": (), "neg": (), "sign": (), "floor": (), "ceil": (), "round": (), "trunc": (),
    "floordiv": (), "convert": (), "reshape": (), "broadcast_in_dim": (), "transpose": (), "slice": (),
    "pad": (), "concatenate": (), "rev": (), "reduce_sum": (), "cumsum": (),
    "exp": (), "expm1": (), "sqrt": (), "tanh": (), "logistic": (), "div": (1,),
    "gather": (1,), "take_along_axis": (1,), "scatter_add": (1,), "scatter_add_along_axis": (1,),
    "scatter_along_axis": (1,), "select": (0,),
})

for _p in REGISTRY.values():  # built-in kernels validate their own operands (see Primitive)
    _p.eager_checks = False

# autocast's lower-precision list (PyTorch's CPU policy: matmuls and convolutions)
for _name in ("dot_general", "conv_general"):
    REGISTRY[_name].autocast_low = True
