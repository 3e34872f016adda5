"""The errors `ember serve` answers with: each carries the HTTP status it maps to."""
from __future__ import annotations

from .._core.errors import EmberError


class ServeError(EmberError):
    """Base class of the model server's errors; `status` is the HTTP status code of the reply."""

    status = 500


class InvalidRequest(ServeError, ValueError):
    """A malformed request: bad JSON, header, name, shape, datatype or data (HTTP 400)."""

    status = 400


class NotFound(ServeError, LookupError):
    """An unknown model or version (HTTP 404)."""

    status = 404


class PayloadTooLarge(InvalidRequest):
    """A request body over the server's `max_body_bytes` (HTTP 413)."""

    status = 413


class QueueFull(ServeError):
    """The model's request queue holds `max_queue_size` requests already (HTTP 429)."""

    status = 429


class RateLimited(QueueFull):
    """Over the server's or router's request rate (HTTP 429 with Retry-After, in whole seconds)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServeError):
    """A model (or the server) that is not ready, is unloading, or a request whose queue
    timeout passed (HTTP 503, as Triton answers both)."""

    status = 503


class Unloading(Unavailable):
    """The model version's batcher is stopping (an unload, or a reload that swapped it out)."""


class ModelError(ServeError):
    """A model that failed to load or whose execution raised (HTTP 500 at inference)."""

    status = 500


class ConfigError(ModelError):
    """A config.json that does not follow the schema in docs/serve.md."""


class MissingDependency(ServeError, ImportError):
    """ember.serve's web stack is not installed."""


def require_web_stack() -> None:
    """Import starlette and uvicorn, or raise MissingDependency naming the extra to install."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"ember.serve needs starlette and uvicorn ({e.name} is missing): "
                                f"pip install 'ember[serve]'") from e
