"""Serving the flagship: the CNN `ember train` checkpoints, behind a base64 PNG/JPEG input.

    ember serve --flagship runs/fashion_mnist         # a checkpoint file, or a directory of them
    make_repository("runs/fashion_mnist", "models/")  # the same repository, written to keep

`make_repository` writes two models from the checkpoint's model state dict (the newest checkpoint
of a directory, found the way `CheckpointManager.latest` finds it):

- `fashion_mnist` (python): BYTES `image`, one base64 PNG or JPEG (or its raw bytes) per batch item,
  -> FP32 `probabilities` [10] and BYTES `label` (the top class's Fashion-MNIST name). It decodes
  and preprocesses with ember/serve/images.py (grayscale, 28x28, the training standardization),
  then runs the CNN in the same process under `ember.jit`, padded to batch buckets like an ember
  model. Preprocessing and the network are one model, so one request does both. Each request runs
  alone (no dynamic batching): an image that fails to decode fails only its own request.
- `fashion_mnist_cnn` (ember): FP32 `x` [1, 28, 28], already standardized, -> `probabilities`, for
  clients that preprocess themselves.

The architecture (the recipe's `FashionCNN`) is rebuilt with the widths read from the state dict's
shapes; its forward is followed by a softmax. The weights are copied into each version directory as
`model.safetensors` (no pickle; the repository does not depend on the checkpoint staying).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np

import ember
import ember.nn.functional as F

from .. import serialization
from ..checkpoint import CheckpointManager
from ..datasets import FashionMNIST
from ..recipes.fashion_mnist import FashionCNN
from .config import parse_config
from .models import JitModel
from .errors import InvalidRequest, MissingDependency, ModelError, NotFound, ServeError, require_web_stack
from .images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, decode_batch, require_pillow

NAME = "fashion_mnist"
DEFAULT_CHECKPOINT = "runs/fashion_mnist"  # `ember train`'s default --out
MAX_BATCH_SIZE = 16
BUCKETS = [1, 4, 16]  # the jitted CNN's batch sizes: three graphs traced at load

_PYTHON_MODEL = '''"""Written by ember.serve.flagship.make_repository: base64 PNG/JPEG -> Fashion-MNIST classes."""
from ember.serve.flagship import FlagshipPipeline

_pipeline = None


def initialize(args):
    global _pipeline
    _pipeline = FlagshipPipeline(args)


def execute(inputs):
    return _pipeline.execute(inputs)
'''

_CNN_MODEL = '''"""Written by ember.serve.flagship.make_repository: the recipe's FashionCNN with a softmax."""
from ember.serve.flagship import FashionClassifier


def build():
    return FashionClassifier({c1}, {c2}, {hidden})
'''


class FashionClassifier(FashionCNN):
    """The recipe's FashionCNN returning class probabilities (the softmax of its logits)."""

    def forward(self, x):
        return F.softmax(super().forward(x), dim=1)


def class_names() -> list:
    """The ten Fashion-MNIST class names, in label order."""
    return list(FashionMNIST.classes)


def resolve_checkpoint(path) -> str:
    """The checkpoint file `path` names: itself, or the newest `ckpt-*.safetensors` of a directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = CheckpointManager(path, keep=None).latest()
        if latest is None:
            raise NotFound(f"no checkpoint (ckpt-<step>.safetensors) in {path!r}; run `ember train` first")
        return str(latest)
    if not os.path.isfile(path):
        raise NotFound(f"no checkpoint file or directory {path!r}; `ember train` writes them to "
                       f"{DEFAULT_CHECKPOINT}/")
    return path


def load_model_state(path) -> tuple:
    """(the CNN's state dict, the checkpoint file) from a checkpoint file or directory. Reads the
    recipe's checkpoints ({"model": state dict, "optimizer": ..., ...}) and bare state dicts."""
    file = resolve_checkpoint(path)
    try:
        obj = ember.load(file)
    except (serialization.CheckpointError, OSError, ValueError) as e:
        raise ModelError(f"cannot read checkpoint {file!r}: {e}") from None
    state = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if not isinstance(state, dict) or "features.0.weight" not in state:
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise ModelError(f"{file!r} holds no FashionCNN state dict (no 'model' entry with "
                         f"'features.0.weight'; it has {keys})")
    return state, file


def architecture(state: dict) -> tuple:
    """(c1, c2, hidden) of the FashionCNN a state dict belongs to, read from its weights' shapes."""
    try:
        c1 = int(state["features.0.weight"].shape[0])
        c2 = int(state["features.4.weight"].shape[0])
        hidden = int(state["classifier.1.weight"].shape[0])
    except (KeyError, AttributeError, IndexError) as e:
        raise ModelError(f"the state dict is not a FashionCNN's (no usable {e})") from None
    want = FashionClassifier(c1, c2, hidden).state_dict()
    if set(want) != set(state):
        raise ModelError(f"the state dict is not a FashionCNN's: missing {sorted(set(want) - set(state))[:4]}, "
                         f"unexpected {sorted(set(state) - set(want))[:4]}")
    bad = [k for k in want if tuple(want[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ModelError(f"the state dict is not a FashionCNN({c1}, {c2}, {hidden})'s: {bad[0]} has shape "
                         f"{tuple(state[bad[0]].shape)}, not {tuple(want[bad[0]].shape)}")
    return c1, c2, hidden


def build_classifier(state: dict):
    """The FashionClassifier (eval mode) holding a FashionCNN state dict."""
    model = FashionClassifier(*architecture(state))
    model.load_state_dict(state)
    return model.eval()


def _write(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)


def _json(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def make_repository(checkpoint, directory, *, name: str = NAME, max_batch_size: int = MAX_BATCH_SIZE) -> dict:
    """Write the flagship's two models (version 1 of `name` and `name`_cnn) into `directory` from a
    checkpoint file or directory; returns {"checkpoint", "models", "architecture"}."""
    state, file = load_model_state(checkpoint)
    c1, c2, hidden = architecture(state)
    directory = os.fspath(directory)
    buckets = sorted({b for b in BUCKETS if b < max_batch_size} | {max_batch_size})
    probs = {"name": "probabilities", "datatype": "FP32", "dims": [10]}
    cnn = f"{name}_cnn"
    configs = {
        # no dynamic batching here: one undecodable image would fail every request batched with it;
        # a request's own images run as one batch, and two instances serve two requests at once
        name: {"name": name, "platform": "python", "max_batch_size": max_batch_size, "instance_count": 2,
               "inputs": [{"name": "image", "datatype": "BYTES", "dims": []}],
               "outputs": [probs, {"name": "label", "datatype": "BYTES", "dims": []}],
               "parameters": {"checkpoint": os.path.abspath(file), "buckets": buckets,
                              "max_image_bytes": MAX_IMAGE_BYTES, "max_image_pixels": MAX_IMAGE_PIXELS}},
        cnn: {"name": cnn, "platform": "ember", "max_batch_size": max_batch_size,
              "inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 28, 28]}], "outputs": [probs],
              "dynamic_batching": {"preferred_batch_size": buckets, "max_queue_delay_microseconds": 1000}},
    }
    for model_name, cfg in configs.items():
        parse_config(cfg, model_name)  # what we write must load
        vdir = os.path.join(directory, model_name, "1")
        _write(os.path.join(directory, model_name, "config.json"), _json(cfg))
        _write(os.path.join(vdir, "model.py"),
               _PYTHON_MODEL if model_name == name else _CNN_MODEL.format(c1=c1, c2=c2, hidden=hidden))
        ember.save(dict(state), os.path.join(vdir, "model.safetensors"), sidecar=False)
    return {"checkpoint": file, "models": [name, cnn], "architecture": (c1, c2, hidden)}


class FlagshipPipeline:
    """The `fashion_mnist` python model: decode and preprocess images, run the jitted CNN."""

    def __init__(self, args: dict):
        require_pillow()
        cfg = args["model_config"]
        name = args["model_name"]
        self.mean, self.std = FashionMNIST.mean, FashionMNIST.std
        self.classes = np.array([c.encode() for c in class_names()], dtype=object)
        params = cfg.get("parameters", {})
        self.max_bytes = int(params.get("max_image_bytes", MAX_IMAGE_BYTES))
        self.max_pixels = int(params.get("max_image_pixels", MAX_IMAGE_PIXELS))
        mbs = int(cfg["max_batch_size"])
        if mbs <= 0:
            raise ModelError(f"model {name!r}: the flagship pipeline needs max_batch_size > 0")
        buckets = params.get("buckets", [])
        inner = parse_config({"platform": "ember", "max_batch_size": mbs,
                              **({"dynamic_batching": {"preferred_batch_size": buckets}} if buckets else {}),
                              "inputs": [{"name": "x", "datatype": "FP32", "dims": [1, 28, 28]}],
                              "outputs": [{"name": "probabilities", "datatype": "FP32", "dims": [10]}]},
                             f"{name}.cnn")
        state = serialization.load(os.path.join(args["version_dir"], "model.safetensors"))
        self.cnn = JitModel(inner, int(args["model_version"]), build_classifier(state), by_name=False)
        self.cnn.warmup()

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) float32 standardized pixels from N BYTES images."""
        return decode_batch(images, self.mean, self.std, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def execute(self, inputs: dict) -> dict:
        """{"image": N BYTES} -> {"probabilities": (N, 10) FP32, "label": (N,) BYTES}."""
        images = inputs["image"]
        n = images.shape[0]
        if images.size != n:
            raise InvalidRequest(f"input 'image' has shape {list(images.shape)}: one image per batch item")
        probs = self.cnn.run({"x": self.preprocess(images)}, n)["probabilities"]
        return {"probabilities": probs, "label": self.classes[probs.argmax(axis=1)]}


def serve_main(args, serve) -> int:
    """`ember serve --flagship CHECKPOINT`: write the flagship's repository (into
    --model-repository if given, else a temporary directory removed at exit) and `serve` it."""
    try:
        require_pillow()
        require_web_stack()
    except MissingDependency as e:
        print(f"ember serve: {e}", file=sys.stderr)
        return 1
    tmp = None if args.model_repository else tempfile.mkdtemp(prefix="ember-flagship-")
    try:
        try:
            info = make_repository(args.flagship, args.model_repository or tmp)
        except ServeError as e:
            print(f"ember serve: {e}", file=sys.stderr)
            return 1
        print(f"ember serve: flagship checkpoint {info['checkpoint']} as models {info['models']}",
              file=sys.stderr, flush=True)
        args.model_repository = args.model_repository or tmp
        return serve(args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
