"""Hive images: an upload is judged by its bytes (JPEG, PNG or WebP, whatever its name or
Content-Type says), refused when too large or with too many pixels (decompression
bombs are refused from the header, before any pixel is decoded), decoded once to find
damaged files, and stored under `business.images_dir` with a content-addressed name
(`ab/abcdef….png`: the same image is stored once; a static location serves the
directory with a long cache lifetime since a name never changes content)."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modules.api import Problem

FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def inspect(data: bytes, max_bytes: int, max_pixels: int) -> str:
    """The file extension of an acceptable image; Problem 413/415/422 otherwise."""
    if len(data) > max_bytes:
        raise Problem(413, f"an image may have {max_bytes} bytes at most")
    if not data:
        raise Problem(415, "send the image's bytes (JPEG, PNG or WebP) as the body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
            width, height = image.size
            if width * height > max_pixels:
                raise Problem(422, f"{width}x{height} pixels: at most {max_pixels} pixels",
                              param="body")
            image.load()
    except UnidentifiedImageError:
        raise Problem(415, "not a JPEG, PNG or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Problem(422, f"too many pixels: at most {max_pixels}", param="body") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Problem(422, f"the image is damaged ({exc})", param="body") from None
    return FORMATS[image.format or ""]


def name_of(data: bytes, extension: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}.{extension}"


def store(directory: str, name: str, data: bytes) -> None:
    """Write the file atomically (a reader never sees half of it); an existing file
    already has these bytes."""
    path = Path(directory) / name
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
