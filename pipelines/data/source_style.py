"""Images for style transfer: content photographs that installed packages ship, style
images (generated, shipped, a user's file or URL), and the one image reader every path of
the family uses (:func:`read_image`), which turns bad input into a clear message or a
documented conversion.

Photographs are read from the installed packages' data folders at run time; nothing is
downloaded, and a package that is missing only removes its photos (at least
:data:`MIN_PHOTOS` must remain).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.registry import DatasetUnavailableError, Loaded, register_dataset
from pipelines.errors import NnzooError

MIN_SIDE = 32
"""Smaller images are refused: the loss network pools four times before its deepest layer,
and a stylizer has nothing to work with."""
MAX_SIDE = 1024
"""Larger images are scaled down (aspect kept) to this longest side."""
MIN_PHOTOS = 3
MAX_DOWNLOAD_BYTES = 50 * 2**20

# name -> (package, path inside the package). Colour photographs only.
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
GENERATED_STYLES = ("mosaic", "waves")
SHIPPED_STYLES: dict[str, tuple[str, str]] = {
    # Textured pictures that installed packages ship, usable as styles.
    "hubble": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    **PHOTOS,
}


class ImageError(NnzooError, ValueError):
    """An image cannot be used: missing, unreadable, not an image, or too small."""


# --- reading any image ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageRead:
    """An image as uint8 RGB ``[H, W, 3]`` and what was done to it on the way."""

    pixels: np.ndarray
    conversions: tuple[str, ...] = ()


def read_image(source: str | Path | bytes, *, what: str = "image", max_side: int = MAX_SIDE,
               min_side: int = MIN_SIDE) -> ImageRead:
    """Read a file (or encoded bytes) into uint8 RGB.

    Conversions, each recorded in ``conversions``: grayscale or palette -> RGB (the gray
    value in every channel); an alpha channel is dropped (composited on white); 16-bit and
    float modes are scaled to 8 bits by PIL; an animation gives its first frame; a longest
    side above ``max_side`` is scaled down to it (Lanczos, aspect kept). Refused with an
    :class:`ImageError` naming the file: missing, a folder, unreadable, not an image,
    damaged, larger than PIL's decompression-bomb limit, or a shorter side below
    ``min_side``.
    """
    from PIL import Image, UnidentifiedImageError

    label = f"{what} ({len(source)} bytes)" if isinstance(source, bytes) else f"{what} {source}"
    if not isinstance(source, bytes):
        path = Path(source).expanduser()
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if not path.is_file():
            raise ImageError(f"{label}: not a file")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else path) as opened:
            opened.load()
            image, conversions = _to_rgb(opened)
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image PIL can read (PNG, JPEG, GIF, BMP, TIFF, WebP ...)") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{label}: too many pixels to decode safely ({error})") from None
    except OSError as error:  # truncated or damaged data
        raise ImageError(f"{label}: damaged or unreadable ({error})") from None
    width, height = image.size
    if min(width, height) < min_side:
        raise ImageError(f"{label}: {width}x{height} pixels; each side must be at least {min_side}")
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(min_side, round(width * scale)), max(min_side, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        conversions = (*conversions, f"scaled down from {width}x{height} to {size[0]}x{size[1]}")
    return ImageRead(np.asarray(image, dtype=np.uint8), conversions)


def _to_rgb(image: Any) -> tuple[Any, tuple[str, ...]]:
    from PIL import Image

    conversions: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        conversions.append(f"first of {image.n_frames} frames")
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
        conversions.append(f"{mode}: alpha channel dropped (composited on white)")
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
        conversions.append(f"{mode}: scaled to 8 bits, gray to RGB")
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255)
                                .astype(np.uint8)).convert("RGB")
        conversions.append("F: scaled to 8 bits, gray to RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
        conversions.append(f"{mode}: converted to RGB" + (" (gray in every channel)" if mode in ("L", "1") else ""))
    return image, tuple(conversions)


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to ``size`` (Lanczos), then the centre ``size x size`` crop."""
    from PIL import Image

    image = Image.fromarray(pixels)
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                           Image.Resampling.LANCZOS)
    left, top = (resized.size[0] - size) // 2, (resized.size[1] - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 RGB resized to exactly ``height x width`` (Lanczos; the aspect may change)."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def content_photo(data: Any, name: str, height: int, width: int | None = None) -> np.ndarray:
    """The named photo of the prepared dataset, float RGB [0, 1] at ``height x width``."""
    for split in ("test", "val", "train"):
        names = [str(n) for n in data.get(split, "name")]
        if name in names:
            pixels = data.get(split, "x")[names.index(name)]
            return resize(pixels, height, width or height).astype(np.float32) / np.float32(255.0)
    raise ValueError(f"photo {name!r} is not in dataset {data.name}")


# --- files that installed packages ship -----------------------------------------------------------


def shipped_file(package: str, relative: str) -> Path | None:
    """The path of a data file inside an installed package (found without importing it), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def available_photos() -> dict[str, Path]:
    """The photographs of :data:`PHOTOS` that the installed packages ship, by name."""
    found = {name: shipped_file(*where) for name, where in PHOTOS.items()}
    return {name: path for name, path in found.items() if path is not None}


@register_dataset(
    "content_photos",
    "Colour photographs shipped by installed packages (scikit-image: astronaut, chelsea, coffee, rocket, "
    "motorcycle; scikit-learn: china, flower; matplotlib: grace_hopper), square-cropped to photo_size",
    "packages:skimage,sklearn,matplotlib sample images",
    generator_version="1",
)
def load_content_photos(data_dir: str | None = None, photo_size: int = 256) -> Loaded:
    """``x`` uint8 [N, photo_size, photo_size, 3]: each photo's shorter side resized to
    ``photo_size``, centre-cropped; ``name`` unicode [N]. Photos whose package is not
    installed are left out (the fingerprint changes with the set)."""
    if photo_size < MIN_SIDE:
        raise ValueError(f"photo_size={photo_size}: expected at least {MIN_SIDE}")
    photos = available_photos()
    if len(photos) < MIN_PHOTOS:
        raise DatasetUnavailableError(
            f"only {len(photos)} of the bundled photographs are installed ({', '.join(photos) or 'none'}); "
            f"at least {MIN_PHOTOS} are needed: install scikit-image, scikit-learn and matplotlib")
    names = sorted(photos)
    images = np.stack([square(read_image(photos[name], what=f"photo {name}", max_side=4096).pixels, photo_size)
                       for name in names])
    return Loaded({"x": images, "name": np.array(names, dtype=np.str_)})


@register_dataset(
    "flower_photos",
    "3,670 flower photographs (tf_flowers, from tensorflow-datasets), square-cropped to photo_size",
    "tfds:tf_flowers",
    generator_version="1",
    examples=3670,
)
def load_flower_photos(data_dir: str | None = None, photo_size: int = 256) -> Loaded:
    """``x`` uint8 [N, photo_size, photo_size, 3], ``name`` unicode [N] (``tf_flowers/<index>``).
    Downloaded only where the user allows it (``NNZOO_TFDS_DOWNLOAD=1``)."""
    import tensorflow_datasets as tfds

    from pipelines.data.registry import load_tfds

    data = load_tfds("tf_flowers", data_dir, "content_photos", split="train")
    images = [square(np.asarray(example["image"]), photo_size) for example in tfds.as_numpy(data)]
    return Loaded({"x": np.stack(images), "name": np.array([f"tf_flowers/{i}" for i in range(len(images))])})


# --- style images ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StyleImage:
    pixels: np.ndarray
    source: str
    """What it is: ``generated:mosaic``, ``skimage:data/ihc.png``, ``file:/path``, ``url:https://...``."""
    conversions: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.pixels.tobytes() + str(self.pixels.shape).encode()).hexdigest()[:16]


def style_names() -> tuple[str, ...]:
    return (*GENERATED_STYLES, *SHIPPED_STYLES)


def load_style(spec: str, size: int = 256, *, allow_url: bool = True, cache_dir: Path | None = None) -> StyleImage:
    """The style image ``spec`` names, longest side at most ``max(size, MIN_SIDE)``.

    ``spec`` is a generated style (``mosaic``, ``waves``: drawn at ``size x size``), a picture
    a package ships (see :func:`style_names`), a file path, or an ``http(s)://`` URL, which
    is downloaded only because it was given (at most 50 MiB, kept in ``cache_dir``).
    """
    if spec in GENERATED_STYLES:
        return StyleImage(generate_style(spec, size), f"generated:{spec}")
    if spec in SHIPPED_STYLES:
        package, relative = SHIPPED_STYLES[spec]
        path = shipped_file(package, relative)
        if path is None:
            raise ImageError(f"style image {spec!r} ships with the {package} package, which is not installed; "
                             f"install it or choose one of {', '.join(GENERATED_STYLES)}")
        read = read_image(path, what=f"style image {spec}", max_side=size)
        return StyleImage(read.pixels, f"{package}:{relative}", read.conversions)
    if spec.startswith(("http://", "https://")):
        if not allow_url:
            raise ImageError(f"style image {spec}: URLs are not fetched here; download it and pass the file's path")
        data = _download(spec, cache_dir)
        read = read_image(data, what=f"style image {spec}", max_side=size)
        return StyleImage(read.pixels, f"url:{spec}", read.conversions)
    if "/" not in spec and "." not in spec:
        raise ImageError(f"style image {spec!r}: not a style name ({', '.join(style_names())}), "
                         "nor a file path or URL")
    read = read_image(spec, what="style image", max_side=size)
    return StyleImage(read.pixels, f"file:{Path(spec).expanduser().resolve()}", read.conversions)


def _download(url: str, cache_dir: Path | None) -> bytes:
    import urllib.error
    import urllib.request

    cached = (cache_dir / hashlib.sha256(url.encode()).hexdigest()[:24]) if cache_dir else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the user gave this URL
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ImageError(f"style image {url}: download failed ({getattr(error, 'reason', error)})") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"style image {url}: larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
    return data


def generate_style(name: str, size: int = 256, seed: int = 0) -> np.ndarray:
    """A painted-looking texture made by code, uint8 ``[size, size, 3]``.

    ``mosaic``: stained glass, Voronoi cells of strong colours with dark leading between
    them. ``waves``: swirling bands of a warm-cold palette (sines of a warped plane).
    Both have structure at several scales, which is what a Gram matrix records.
    """
    if size < MIN_SIDE:
        raise ValueError(f"size={size}: expected at least {MIN_SIDE}")
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if name == "mosaic":
        cells = 48
        centres = rng.random((cells, 2))
        palette = np.array([[220, 40, 40], [250, 200, 30], [30, 90, 200], [30, 160, 80], [240, 120, 20],
                            [120, 40, 160], [250, 240, 220]], dtype=np.float64)
        colours = palette[rng.integers(0, len(palette), cells)] * rng.uniform(0.75, 1.0, (cells, 1))
        distance = (rows[..., None] - centres[:, 0]) ** 2 + (columns[..., None] - centres[:, 1]) ** 2
        ordered = np.sort(distance, axis=-1)
        nearest = np.argmin(distance, axis=-1)
        image = colours[nearest]
        edge = np.sqrt(ordered[..., 1]) - np.sqrt(ordered[..., 0])
        image *= np.clip(edge * size / 3.0, 0.0, 1.0)[..., None]  # dark leading near cell borders
        image *= 1.0 - 0.15 * np.sin(40 * rows + 5 * np.sin(30 * columns))[..., None] ** 2  # glass texture
    elif name == "waves":
        warp = rows + 0.08 * np.sin(9 * columns) + 0.05 * np.sin(23 * rows + 4 * columns)
        phase = 14 * warp + 3 * np.sin(6 * columns + 2 * rows)
        t = 0.5 + 0.5 * np.sin(phase)
        warm, cold = np.array([245, 190, 40.0]), np.array([20, 50, 140.0])
        image = cold + (warm - cold) * t[..., None]
        image += 35 * np.sin(60 * columns + 10 * np.sin(8 * rows))[..., None] * np.array([1.0, 0.6, -0.4])
    else:
        raise ValueError(f"generated style {name!r}: expected one of {', '.join(GENERATED_STYLES)}")
    return np.clip(image, 0, 255).astype(np.uint8)
