"""ember's intermediate representation (typed SSA with value semantics); see core.py."""
from .core import ConcretizationError, Eqn, Graph, Literal, Var, literal, type_str  # noqa: F401
from .parser import ParseError, parse_graph as parse  # noqa: F401
from .printer import print_graph  # noqa: F401
from .verify import VerifyError, verify  # noqa: F401
