"""The test pipeline recorded with a model, so that every way of scoring or running it agrees.

Training writes into the model's config (`config.test_pipeline`) how its validation was run: the keep-ratio
resize bound `scale` ([long, short], or null for no resize), `mode` ("whole" or "slide") and, for "slide", the
window `crop_size` and `stride`. `segformer.evaluate`, `segformer.predict`, `segformer eval`, `segformer predict`
and `segformer serve` use it for whatever the caller leaves unset, so the training's final evaluation, `segformer
eval` and `predict`-then-score give the same numbers. A model without a record (a hub or converted checkpoint)
keeps the old defaults: the dataset's recipe scale for evaluation, Hugging Face's fixed 512 x 512 resize for
prediction, except that `mode="slide"` means no resize unless one is asked for. A slide stride left unset is 2/3
of the window everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from .preprocess import ImageProcessor

MODES = ("whole", "slide")
DEFAULT_CROP = (512, 512)


def default_stride(crop_size: Sequence[int]) -> tuple[int, int]:
    """The slide stride when none is given: 2/3 of the window (mmseg's 512 -> 341), at least 1."""
    return tuple(max(1, 2 * int(c) // 3) for c in crop_size)


def make_test_pipeline(scale: Sequence[int] | None, mode: str = "whole", crop_size: Sequence[int] | None = None,
                       stride: Sequence[int] | None = None) -> dict:
    """The JSON-able record of a test pipeline (what training stores in `model.config.test_pipeline`)."""
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; accepted: {', '.join(MODES)}")
    record = {"scale": list(scale) if scale is not None else None, "mode": mode}
    if mode == "slide":
        crop = tuple(crop_size or DEFAULT_CROP)
        record.update(crop_size=list(crop), stride=list(stride or default_stride(crop)))
    return record


def recorded_pipeline(model) -> dict | None:
    """The test pipeline recorded in `model.config`, or None."""
    return getattr(getattr(model, "config", None), "test_pipeline", None)


def resolve_window(model, mode: str | None, crop_size: Sequence[int] | None,
                   stride: Sequence[int] | None) -> tuple[str, tuple[int, int] | None, tuple[int, int] | None]:
    """(mode, crop, stride): the given values, else the model's recorded ones, else whole / 512 / 2/3 crop."""
    record = recorded_pipeline(model) or {}
    mode = mode or record.get("mode", "whole")
    if mode != "slide":
        return mode, tuple(crop_size) if crop_size else None, tuple(stride) if stride else None
    same = record.get("mode") == "slide"
    crop = tuple(crop_size or (record.get("crop_size") if same else None) or DEFAULT_CROP)
    if stride is None:
        stride = record.get("stride") if same and crop_size is None else default_stride(crop)
    return mode, crop, tuple(stride)


def resolve_scale(model, scale: Sequence[int] | None, dataset_scale: Sequence[int] | None) -> tuple | None:
    """The evaluation's keep-ratio resize bound: the given one, else the recorded one (None: no resize), else
    the dataset's recipe scale."""
    if scale is not None:
        return tuple(scale)
    record = recorded_pipeline(model)
    if record is None:
        return tuple(dataset_scale) if dataset_scale is not None else None
    return tuple(record["scale"]) if record.get("scale") else None


def predict_processor(model, mode: str) -> ImageProcessor:
    """`predict`'s processor when none is given: the recorded keep-ratio resize (mmseg's test pipeline), else
    no resize for a sliding window, else Hugging Face's fixed 512 x 512."""
    record = recorded_pipeline(model)
    if record is not None:
        return ImageProcessor.mmseg(tuple(record["scale"]) if record.get("scale") else None)
    return ImageProcessor(size=None) if mode == "slide" else ImageProcessor()
