"""Image preprocessing for served models: base64 (or raw) PNG/JPEG bytes to Fashion-MNIST tensors.

Each element of a BYTES input is one image, as either
- base64 text of a PNG or JPEG file (standard or URL-safe alphabet, padding optional, whitespace
  and a `data:image/...;base64,` prefix ignored), or
- the raw PNG/JPEG file bytes (recognised by their magic numbers; the binary tensor extension
  carries them without the base64 overhead).

Decoding checks, each failing with `InvalidRequest` (HTTP 400) naming the element: the encoded and
decoded sizes, the base64 alphabet, the format (only PNG and JPEG are opened, so no other Pillow
decoder is reachable from a request), the pixel count (read from the header, before any pixel is
decoded) and the image's completeness. The image then becomes what the recipe trains on:
8-bit grayscale (Pillow's "L": ITU-R 601-2 luma; alpha is dropped), padded with black to a square,
resized to 28x28 (bilinear, antialiased when shrinking), scaled to [0, 1] and standardized with
Fashion-MNIST's mean and std in the same float32 steps as `FashionMNIST.as_tensors(standardize=True)`.

Pillow is imported on first use; without it `MissingDependency` names the extra to install.
"""
from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np

from .errors import InvalidRequest, MissingDependency

SIZE = 28
MAX_IMAGE_BYTES = 8 << 20  # one decoded image file
MAX_IMAGE_PIXELS = 4096 * 4096
# 16-bit, 32-bit and float images are refused rather than silently clipped to 8 bits
_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_DATA_URL = re.compile(rb"^data:image/[A-Za-z0-9.+\-]+;base64,")
_WS = re.compile(rb"\s+")


def require_pillow():
    """The PIL.Image module, or MissingDependency naming the extra that installs Pillow."""
    try:
        from PIL import Image
    except ImportError as e:
        raise MissingDependency("image preprocessing needs Pillow (PIL is missing): "
                                "pip install 'ember[serve]'") from e
    return Image


def image_bytes(element, what: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The image file bytes of one BYTES element: itself if it is a PNG/JPEG, else base64-decoded."""
    if isinstance(element, str):
        element = element.encode("utf-8")
    b = bytes(element)
    if b.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        if len(b) > max_bytes:
            raise InvalidRequest(f"{what}: the image has {len(b)} bytes, over the limit of {max_bytes}")
        return b
    if len(b) > (max_bytes + 2) // 3 * 4 + 4096:  # base64 of max_bytes, with slack for prefix and newlines
        raise InvalidRequest(f"{what}: {len(b)} bytes of base64 decode to more than the limit of "
                             f"{max_bytes} bytes per image")
    s = _WS.sub(b"", _DATA_URL.sub(b"", b.lstrip(), count=1))
    if not s:
        raise InvalidRequest(f"{what} is empty; send a base64-encoded PNG or JPEG")
    s = s.replace(b"-", b"+").replace(b"_", b"/")
    s += b"=" * (-len(s) % 4)
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"{what} is not valid base64 ({e}); send a base64-encoded PNG or JPEG, "
                             f"or the raw file bytes") from None
    if len(raw) > max_bytes:
        raise InvalidRequest(f"{what}: the image has {len(raw)} bytes, over the limit of {max_bytes}")
    return raw


def open_image(raw: bytes, what: str, max_pixels: int = MAX_IMAGE_PIXELS):
    """A fully decoded PIL image of a PNG or JPEG file, its size checked before decoding."""
    Image = require_pillow()
    from PIL import UnidentifiedImageError
    try:
        img = Image.open(io.BytesIO(raw), formats=("PNG", "JPEG"))
    except UnidentifiedImageError:
        raise InvalidRequest(f"{what} is not a PNG or JPEG image ({len(raw)} bytes starting "
                             f"{raw[:8]!r})") from None
    except Image.DecompressionBombError as e:
        raise InvalidRequest(f"{what}: the image is too large ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InvalidRequest(f"{what}: a broken {type(e).__name__} image header: {e}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise InvalidRequest(f"{what}: the image is {w}x{h} pixels, over the limit of {max_pixels} pixels")
    if w == 0 or h == 0:
        raise InvalidRequest(f"{what}: the image is empty ({w}x{h})")
    if img.mode not in _MODES:
        raise InvalidRequest(f"{what}: {img.format} mode {img.mode!r} is not served; send an 8-bit "
                             f"grayscale or colour image")
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise InvalidRequest(f"{what}: the {img.format} image is incomplete or corrupt ({e})") from None
    return img


def to_grayscale_28(img) -> np.ndarray:
    """(28, 28) uint8: grayscale, padded with black to a square (centred), resized to 28x28."""
    Image = require_pillow()
    g = img.convert("L")
    w, h = g.size
    if w != h:
        side = max(w, h)
        square = Image.new("L", (side, side), 0)
        square.paste(g, ((side - w) // 2, (side - h) // 2))
        g = square
    if g.size != (SIZE, SIZE):
        g = g.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.uint8)


def standardize(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 pixels as float32 ``(x / 255 - mean) / std``, in the training transform's float32 steps."""
    x = pixels.astype(np.float32)
    x /= np.float32(255.0)
    x -= np.float32(mean)
    x /= np.float32(std)
    return x


def decode_batch(elements: np.ndarray, mean: float, std: float, *, name: str = "image",
                 max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(N, 1, 28, 28) float32 model input from N BYTES elements (any shape, read row-major)."""
    require_pillow()
    flat = np.asarray(elements, dtype=object).reshape(-1)
    out = np.empty((len(flat), 1, SIZE, SIZE), np.float32)
    for i, el in enumerate(flat):
        what = f"input {name!r} element {i}"
        if not isinstance(el, (bytes, bytearray, memoryview, np.bytes_, str)):
            raise InvalidRequest(f"{what} is a {type(el).__name__}, not bytes")
        img = open_image(image_bytes(el, what, max_bytes), what, max_pixels)
        out[i, 0] = standardize(to_grayscale_28(img), mean, std)
    return out
