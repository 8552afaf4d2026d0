"""A built-in outlier set: letters rendered with Pillow's bundled font, white on black like MNIST.

Outlier Exposure and EDM need an auxiliary outlier set that the attacker does not hold (the SAME
paper used KMNIST, which is not bundled here, and the attacker's proxy set is scikit-learn's
digits). Rendered letters are close enough to handwriting to be a useful "near" outlier set for
digit classifiers, and they need no download: Pillow >= 10.1 ships a scalable font
(``ImageFont.load_default(size=...)``, needs Pillow built with FreeType).
"""

from __future__ import annotations

import math
import string

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from stealcheck.datasets import DataContext, Dataset
from stealcheck.errors import ScenarioError
from stealcheck.registry import FloatPair, PARAMS_CONFIG, data_sources

from stealcheck.preflight import DataFacts

from .data import _image_input, _role_path, fit_images

# Glyphs are drawn on a canvas this large, then resized to the victim's input: large enough that
# stroke widths and sub-pixel shifts survive, small enough that 10,000 glyphs render in seconds.
_CANVAS = 64
# Font size for a glyph at scale 1: capitals then fill about 20/28 of the canvas, MNIST's layout.
_FONT_SIZE = 44


class GlyphParams(BaseModel):
    """Parameters of the glyph outlier set."""

    model_config = PARAMS_CONFIG
    size: int = Field(5000, gt=0, description="number of samples")
    alphabet: str = Field(string.ascii_letters, min_length=1,
                          description="characters to render, each once; label = its index here (digits are left "
                          "out by default: they would be in-distribution for a digit classifier)")
    scale: FloatPair = Field((0.7, 1.1), description="range of the random scale factor (1 = capitals "
                                       "about 20/28 of the image high)")
    rotation: float = Field(15.0, ge=0, le=180, description="maximum rotation in degrees, either way")
    shift: float = Field(0.1, ge=0, le=0.5, description="maximum translation as a fraction of the image side, "
                         "each axis")
    max_stroke: int = Field(2, ge=0, le=6, description="stroke width drawn around the glyph, chosen uniformly "
                            "from 0..max_stroke on a 64-pixel canvas (thickens the letters)")

    @field_validator("alphabet")
    @classmethod
    def _unique(cls, value: str) -> str:
        repeated = sorted({c for c in value if value.count(c) > 1})
        if repeated:
            raise ValueError(f"alphabet must list each character once; repeated: {''.join(repeated)!r}")
        if any(c.isspace() for c in value):
            raise ValueError("alphabet must not contain whitespace (it renders as a blank image)")
        return value

    @model_validator(mode="after")
    def _scale_range(self) -> "GlyphParams":
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be [min, max] with 0 < min <= max, got [{lo}, {hi}]")
        return self


def _font(size: int):
    from PIL import ImageFont, features

    if not features.check("freetype2"):
        raise ScenarioError("the glyphs data source needs Pillow built with FreeType (for its bundled scalable "
                            "font); this Pillow has no FreeType support.")
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed-size bitmap font
        import PIL

        raise ScenarioError(f"the glyphs data source needs Pillow >= 10.1 (a scalable bundled font); "
                            f"found Pillow {PIL.__version__}.") from None


def _inverse_affine(angle_deg: float, scale: float, dx: float, dy: float) -> tuple[float, ...]:
    """Coefficients (a, b, c, d, e, f) mapping an output pixel to the input pixel, as
    ``Image.transform(..., AFFINE)`` wants: rotation and scale about the centre, then a shift."""
    centre = _CANVAS / 2
    t = math.radians(angle_deg)
    cos, sin = math.cos(t) / scale, math.sin(t) / scale
    # input = R(-t)/s @ (output - centre - shift) + centre
    ox, oy = centre + dx, centre + dy
    return (cos, sin, centre - cos * ox - sin * oy,
            -sin, cos, centre + sin * ox - cos * oy)


def render_glyphs(labels: np.ndarray, alphabet: str, params: GlyphParams, rng: np.random.Generator,
                  out_size: tuple[int, int] = (_CANVAS, _CANVAS)) -> np.ndarray:
    """Render ``alphabet[label]`` for each label with random affine jitter; (N, 1, H, W) floats in [0, 1].

    Glyphs are drawn on a 64x64 canvas and reduced to ``out_size`` with Pillow's antialiasing
    filter (torch's bilinear resize would alias thin strokes).
    """
    from PIL import Image, ImageDraw

    font = _font(_FONT_SIZE)
    n = len(labels)
    lo, hi = params.scale
    scales = rng.uniform(lo, hi, n)
    angles = rng.uniform(-params.rotation, params.rotation, n)
    shifts = rng.uniform(-params.shift, params.shift, (n, 2)) * _CANVAS
    strokes = rng.integers(0, params.max_stroke + 1, n)
    h, w = out_size
    out = np.empty((n, 1, h, w), dtype=np.float32)
    for i, label in enumerate(labels):
        img = Image.new("L", (_CANVAS, _CANVAS), 0)
        # anchor "mm": the glyph's middle at the canvas centre, whatever its ascent and descent
        ImageDraw.Draw(img).text((_CANVAS / 2, _CANVAS / 2), alphabet[label], fill=255, font=font, anchor="mm",
                                 stroke_width=int(strokes[i]), stroke_fill=255)
        img = img.transform(img.size, Image.Transform.AFFINE,
                            _inverse_affine(angles[i], scales[i], shifts[i, 0], shifts[i, 1]),
                            resample=Image.Resampling.BILINEAR, fillcolor=0)
        if (h, w) != img.size[::-1]:
            img = img.resize((w, h), Image.Resampling.LANCZOS)
        out[i, 0] = np.asarray(img, dtype=np.float32) / 255.0
    return out


def _inspect_glyphs(params: GlyphParams, ctx: DataContext, path: str | None) -> DataFacts:
    _image_input(ctx, path, "glyphs")
    k = len(params.alphabet)
    return DataFacts(n=params.size, n_classes=min(k, params.size), max_label=min(k, params.size) - 1,
                     description="glyphs")


@data_sources.register("glyphs", params=GlyphParams, static_size=lambda p: p.size, labelled=True,
                       inspect=_inspect_glyphs)
def glyphs(params: GlyphParams, ctx: DataContext) -> Dataset:
    """Letters rendered with Pillow's bundled font, white on black, randomly shifted, scaled, rotated and thickened
    (a built-in outlier set for OE / EDM; label = index of the character in the alphabet).

    The same seed gives the same images; classes are balanced (sample i shows character i mod
    len(alphabet) before shuffling). Images are resized to the victim's input shape and range.
    """
    _inspect_glyphs(params, ctx, _role_path(ctx))
    rng = np.random.default_rng(ctx.seed)
    labels = rng.permutation(np.arange(params.size) % len(params.alphabet))
    x = render_glyphs(labels, params.alphabet, params, rng, out_size=tuple(ctx.input_shape[1:]))
    return Dataset(fit_images(x, ctx.input_shape, ctx.input_range), labels, "glyphs")
