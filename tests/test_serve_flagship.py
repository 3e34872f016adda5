"""Serving the flagship CNN from its checkpoint (ember/serve/flagship.py, images.py) on 127.0.0.1:
a checkpoint written through the recipe's CheckpointManager call, base64 PNG and JPEG requests over
JSON and through the Triton client, 10 probabilities equal to the model run directly on the same
preprocessed pixels, 400s for bad images, `ember serve --flagship`, and a real tiny training run
when Fashion-MNIST is on this machine."""
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import ember
import ember.nn.functional as F

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
Image = pytest.importorskip("PIL.Image")
from ember.datasets import FashionMNIST  # noqa: E402
from ember.recipes.fashion_mnist import FashionCNN  # noqa: E402
from ember.serve import Server  # noqa: E402
from ember.serve import flagship, images  # noqa: E402


def _save_like_the_recipe(directory, model, opt, sched, step):
    """The checkpoint `ember train` writes at the end of an epoch (fashion_mnist.train)."""
    mgr = ember.checkpoint.CheckpointManager(directory, keep=3)
    return mgr.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": 1, "test_accuracy": 0.1}, step)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(checkpoint directory, the eager FashionCNN it holds): freshly initialised, then two AdamW
    steps on random data so the batch-norm statistics are not the initial ones."""
    d = str(tmp_path_factory.mktemp("runs"))
    ember.manual_seed(0)
    model = FashionCNN()
    opt = ember.optim.AdamW(model.parameters(), lr=2e-3)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    rng = np.random.default_rng(0)
    for step in (1, 2):
        x = ember.from_numpy(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
        loss = F.cross_entropy(model(x), ember.from_numpy(rng.integers(0, 10, 8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        _save_like_the_recipe(d, model, opt, sched, step)
    return d, model.eval()


@pytest.fixture(scope="module")
def sample():
    """A 28x28 uint8 image: Fashion-MNIST's first test image if the data set is here, else a
    synthetic garment-like one (a bright noisy shape on black)."""
    try:
        return FashionMNIST(train=False).data[0].copy()
    except Exception:  # noqa: BLE001 - DatasetError: not on this machine
        rng = np.random.default_rng(1)
        img = np.zeros((28, 28), np.uint8)
        img[4:24, 8:20] = rng.integers(120, 255, (20, 12))
        return img


def _encode(arr, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _expected(model, pixels_u8):
    """The eager recipe model's softmax on pixels standardized as the training data is."""
    x = pixels_u8.astype(np.float32)[None, None] / np.float32(255.0)
    x = (x - np.float32(FashionMNIST.mean)) / np.float32(FashionMNIST.std)
    with ember.no_grad():
        return F.softmax(model(ember.from_numpy(x.astype(np.float32))), dim=1).numpy()


def _server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ember-serve")]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("flagship_repository"))
    info = flagship.make_repository(checkpoint[0], root)
    assert info["checkpoint"].endswith("ckpt-00000002.safetensors")  # the newest of the directory
    srv = Server(root, max_body_bytes=16 << 20).start()
    yield srv
    srv.stop()
    assert _server_threads() == [], "the server left threads behind"


def call(port, path, body, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body).encode())
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def infer_images(port, elements):
    return call(port, "/v2/models/fashion_mnist/infer",
                {"inputs": [{"name": "image", "shape": [len(elements)], "datatype": "BYTES", "data": elements}]})


def test_make_repository_writes_loadable_models(server, checkpoint, tmp_path):
    ready = {(m["name"], m["state"]) for m in server.repository.index()}
    assert ready == {("fashion_mnist", "READY"), ("fashion_mnist_cnn", "READY")}
    info = flagship.make_repository(os.path.join(checkpoint[0], "ckpt-00000001.safetensors"), tmp_path)
    assert info["architecture"] == (16, 32, 128) and info["models"] == ["fashion_mnist", "fashion_mnist_cnn"]
    for m in info["models"]:
        assert os.path.isfile(tmp_path / m / "1" / "model.safetensors")
    with pytest.raises(ember.serve.NotFound, match="no checkpoint"):
        flagship.make_repository(tmp_path / "nothing_here", tmp_path / "r")
    ember.save({"weights": ember.zeros(3)}, tmp_path / "other.safetensors", sidecar=False)
    with pytest.raises(ember.serve.ModelError, match="no FashionCNN state dict"):
        flagship.make_repository(tmp_path / "other.safetensors", tmp_path / "r")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_base64_image_over_json_gives_the_models_probabilities(server, checkpoint, sample, fmt):
    data = _encode(sample, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    # PNG is lossless: the server must see the very pixels; JPEG: what Pillow decodes
    pixels = sample if fmt == "PNG" else np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    want = _expected(checkpoint[1], pixels)
    status, body = infer_images(server.port, [_b64(data)])
    assert status == 200, body
    outs = {o["name"]: o for o in body["outputs"]}
    assert outs["probabilities"]["shape"] == [1, 10] and outs["probabilities"]["datatype"] == "FP32"
    probs = np.array(outs["probabilities"]["data"], np.float32).reshape(1, 10)
    assert abs(float(probs.sum()) - 1) < 1e-5 and (probs >= 0).all()
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    assert outs["label"]["data"] == [FashionMNIST.classes[int(want.argmax())]]
    # the same pixels, preprocessed by the client, through the plain CNN model
    x = images.standardize(pixels, FashionMNIST.mean, FashionMNIST.std)[None, None]
    status, body = call(server.port, "/v2/models/fashion_mnist_cnn/infer",
                        {"inputs": [{"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "data": x.reshape(-1).tolist()}]})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 10), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client_batch_of_png_jpeg_and_raw_bytes(server, checkpoint, sample, binary):
    httpclient = pytest.importorskip("tritonclient.http")
    png, jpeg = _encode(sample, "PNG"), _encode(255 - sample, "JPEG", quality=95)
    elements = [_b64(png).encode(), _b64(jpeg).encode(), "data:image/png;base64," + _b64(png)]
    if binary:
        elements.append(png)  # the raw file bytes: only the binary extension carries them
    want = np.concatenate([_expected(checkpoint[1], sample),
                           _expected(checkpoint[1], np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))),
                           _expected(checkpoint[1], sample)] + ([_expected(checkpoint[1], sample)] if binary else []))
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)
    try:
        inp = httpclient.InferInput("image", [len(elements)], "BYTES")
        inp.set_data_from_numpy(np.array(elements, dtype=object), binary_data=binary)
        res = c.infer("fashion_mnist", [inp], outputs=[
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("label", binary_data=binary)])
        probs = res.as_numpy("probabilities")
        assert probs.shape == (len(elements), 10) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
        labels = [b.decode() if isinstance(b, bytes) else b for b in res.as_numpy("label").reshape(-1)]
        assert labels == [FashionMNIST.classes[i] for i in want.argmax(axis=1)]
        md = c.get_model_metadata("fashion_mnist")
        assert md["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    finally:
        c.close()


def _big_png():
    return _encode(np.zeros((4100, 4100), np.uint8), "PNG")  # 16.8 M pixels, 17 kB compressed


@pytest.mark.parametrize("what,element,message", [
    ("bad base64", "this is not base64!", "is not valid base64"),
    ("base64 of text", _b64(b"hello, not an image at all"), "is not a PNG or JPEG image"),
    ("a GIF", _b64(b"GIF89a" + bytes(40)), "is not a PNG or JPEG image"),
    ("empty", "", "is empty"),
    ("truncated PNG", None, "incomplete or corrupt"),
    ("too many pixels", None, "over the limit of 16777216 pixels"),
    ("16-bit PNG", None, "mode 'I;16' is not served"),
])
def test_bad_images_answer_400_naming_the_element(server, sample, what, element, message):
    if what == "truncated PNG":
        png = _encode((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8), "PNG")
        element = _b64(png[:len(png) // 2])
    elif what == "too many pixels":
        element = _b64(_big_png())
    elif what == "16-bit PNG":
        element = _b64(_encode(sample.astype(np.uint16) * 257, "PNG"))
    status, body = infer_images(server.port, [_b64(_encode(sample, "PNG")), element])
    assert status == 400, (what, body)
    assert message in body["error"] and "input 'image' element 1" in body["error"], body
    assert set(body) == {"error"}
    assert infer_images(server.port, [_b64(_encode(sample, "PNG"))])[0] == 200  # still serving


def test_too_many_bytes_and_wrong_shape_answer_400(server):
    huge = "A" * ((images.MAX_IMAGE_BYTES + 2) // 3 * 4 + 8192)
    status, body = infer_images(server.port, [huge])
    assert status == 400 and "more than the limit of 8388608 bytes" in body["error"]
    status, body = call(server.port, "/v2/models/fashion_mnist/infer",
                        {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert status == 400 and "BYTES" in body["error"]


def test_preprocessing_colour_alpha_palette_and_size(sample):
    gray = np.repeat(sample[:, :, None], 3, axis=2)
    base = images.decode_batch(np.array([_encode(sample, "PNG")], object), FashionMNIST.mean, FashionMNIST.std)
    assert base.shape == (1, 1, 28, 28) and base.dtype == np.float32
    variants = [_encode(gray, "PNG"), _encode(np.dstack([gray, np.full((28, 28), 255, np.uint8)]), "PNG"),
                _encode(sample, "PNG", bits=8, optimize=False)]
    pal = io.BytesIO()
    Image.fromarray(sample).convert("P").save(pal, "PNG")
    got = images.decode_batch(np.array(variants + [pal.getvalue()], object), FashionMNIST.mean, FashionMNIST.std)
    for i in range(len(got)):
        np.testing.assert_array_equal(got[i], base[0], err_msg=f"variant {i}")
    # other sizes are padded to a square with black, then resized to 28x28
    wide = np.asarray(Image.fromarray(sample).resize((56, 28)))
    out = images.to_grayscale_28(Image.open(io.BytesIO(_encode(wide, "PNG"))))
    assert out.shape == (28, 28) and out[:6].max() == 0 and out[-6:].max() == 0


def test_missing_pillow_is_named(monkeypatch, checkpoint, capsys):
    import argparse
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(ember.serve.MissingDependency, match=r"needs Pillow.*pip install 'ember\[serve\]'"):
        images.decode_batch(np.array([b"x"], object), 0.0, 1.0)
    args = argparse.Namespace(flagship=checkpoint[0], model_repository=None)
    assert flagship.serve_main(args, serve=lambda a: pytest.fail("must not serve")) == 1
    assert "needs Pillow" in capsys.readouterr().err


def test_cli_serve_flagship(checkpoint, sample, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "ember.cli", "serve", "--flagship", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no checkpoint file or directory" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "ember.cli", "serve", "--flagship", checkpoint[0],
                             "--port", "0", "--log-level", "warning"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ember serve: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split()[2].rsplit(":", 1)[1])
        status, body = infer_images(port, [_b64(_encode(sample, "PNG"))])
        assert status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 10),
                                   _expected(checkpoint[1], sample), rtol=1e-5, atol=1e-6)
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    repo = [ln for ln in proc.stderr.read().splitlines() if "flagship checkpoint" in ln]
    assert repo and "ckpt-00000002.safetensors" in repo[0]


def test_a_real_tiny_training_run_serves(tmp_path):
    """`ember train`'s code path for 4 steps on Fashion-MNIST, then its checkpoint served."""
    try:
        test_set = FashionMNIST(train=False)
    except Exception as e:  # noqa: BLE001 - DatasetError
        pytest.skip(f"Fashion-MNIST is not on this machine: {e}")
    from ember.recipes.fashion_mnist import Config, train
    res = train(Config(epochs=1, limit_train=256, batch_size=64, progress=False, jit=False, out=str(tmp_path / "run")))
    model = FashionCNN()
    model.load_state_dict(ember.checkpoint.CheckpointManager(tmp_path / "run").load_latest()["model"])
    model.eval()
    flagship.make_repository(res["checkpoint"], tmp_path / "repo")
    pngs = [_b64(_encode(test_set.data[i], "PNG")) for i in range(8)]
    with Server(tmp_path / "repo", models=["fashion_mnist"]) as srv:
        status, body = infer_images(srv.port, pngs)
    assert status == 200, body
    probs = np.array(body["outputs"][0]["data"], np.float32).reshape(8, 10)
    want = np.concatenate([_expected(model, test_set.data[i]) for i in range(8)])
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
