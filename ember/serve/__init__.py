"""ember serve: a model server speaking KServe's Open Inference Protocol v2 over REST (the protocol
NVIDIA Triton speaks), with a Triton-layout model repository, a dynamic batcher, canary releases, and
replicas behind a router that retries and autoscales them. See docs/serve.md.

    from ember.serve import Server
    with Server("models/", port=8000) as srv:
        ...                                  # or: ember serve --model-repository models/

The web stack (starlette, uvicorn) is the extra `pip install 'ember[serve]'`; it is imported when a
Server starts, so `import ember.serve` works without it and `import ember` never imports it.
"""
from __future__ import annotations

from .autoscale import Autoscale  # noqa: F401
from .canary import CanaryPolicy  # noqa: F401
from .config import ModelConfig, TensorSpec, parse_config, read_config  # noqa: F401
from .errors import (ConfigError, InvalidRequest, MissingDependency, ModelError, NotFound,  # noqa: F401
                     PayloadTooLarge, QueueFull, RateLimited, ServeError, Unavailable)
from .replicas import ReplicaSet  # noqa: F401
from .router import Router  # noqa: F401
from .server import Server  # noqa: F401

__all__ = ["Server", "Router", "ReplicaSet", "Autoscale", "CanaryPolicy", "ServeError", "InvalidRequest",
           "NotFound", "PayloadTooLarge", "QueueFull", "RateLimited", "Unavailable", "ModelError", "ConfigError",
           "MissingDependency", "ModelConfig", "TensorSpec", "parse_config", "read_config"]
