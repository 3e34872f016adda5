"""Chapter 8 (model deployment): export a model to ONNX (folding constants and Conv+BatchNorm),
load it back into ember, and run it with onnxruntime when that is installed.

    python3 examples/ch08_onnx_export.py      (needs ember[onnx])
"""
import os
import tempfile

import numpy as np

import ember
import ember.nn as nn


def main() -> None:
    ember.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()
    x = ember.randn(2, 1, 28, 28)
    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    ember.onnx.export(model, (x,), path)
    back = ember.onnx.load(path)
    with ember.no_grad():
        want, got = model(x).numpy(), back(x).detach().numpy()
    print(f"exported {path}: ember reloaded it, max difference {np.abs(want - got).max():.2e}")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: skipping the onnxruntime comparison")
        return
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    print(f"onnxruntime runs it too, max difference {np.abs(want - out).max():.2e}")


if __name__ == "__main__":
    main()
