"""Palettes (ADE20K, Cityscapes, generated) and the colour mask / overlay / legend pictures."""

import numpy as np
import pytest
from PIL import Image

from segformer.data.palettes import generated_palette, get_class_names, get_palette
from segformer.visualize import add_legend, colorize, overlay, render


def test_dataset_palettes_and_names():
    ade, cs = get_palette(150), get_palette(19)
    assert ade.shape == (150, 3) and cs.shape == (19, 3) and ade.dtype == cs.dtype == np.uint8
    # Reference values (mmseg's ADE20KDataset / CityscapesDataset METAINFO, the official toolkits' colours).
    assert ade[0].tolist() == [120, 120, 120] and ade[149].tolist() == [92, 0, 255]
    assert cs[0].tolist() == [128, 64, 128] and cs[18].tolist() == [119, 11, 32]
    names = get_class_names(150)
    assert (names[0], names[7], names[149]) == ("wall", "bed", "flag")  # mmseg's "bed " loses its stray space
    assert get_class_names(19)[-1] == "bicycle"
    assert np.array_equal(get_palette(10, "cityscapes"), cs[:10])
    assert get_class_names(3) == ["class_0", "class_1", "class_2"]
    assert np.array_equal(get_palette(150, "generated"), generated_palette(150))


def test_palette_errors_name_what_is_accepted():
    with pytest.raises(ValueError, match=r"unknown palette 'nope'; accepted: ade20k, cityscapes, coco_stuff, "
                       r"pascal_context, pascal_context_59, voc, generated"):
        get_palette(5, "nope")
    with pytest.raises(ValueError, match="the cityscapes palette has 19 colours, too few for 20 classes"):
        get_palette(20, "cityscapes")
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        generated_palette(0)


def test_generated_palette_is_the_voc_colour_map_and_distinct():
    pal = generated_palette(4096)
    # Pascal VOC's colour map: 0 black, then 1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0), ...
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    # VOC's cat (8), person (15), train (19) and tvmonitor (20)
    assert pal[[8, 15, 19, 20]].tolist() == [[64, 0, 0], [192, 128, 128], [128, 192, 0], [0, 64, 128]]
    assert len({tuple(c) for c in pal}) == 4096  # every class its own colour
    assert np.array_equal(generated_palette(37), pal[:37])  # the same whatever the count


def test_colorize_and_overlay_arithmetic():
    pal = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    labels = np.array([[0, 1], [255, -1]])
    assert colorize(labels, pal).tolist() == [[[255, 0, 0], [0, 0, 255]], [[0, 0, 0], [0, 0, 0]]]
    image = np.full((2, 2, 3), 100, np.uint8)
    assert np.array_equal(overlay(image, labels, pal, 0.0), image)
    full = overlay(image, labels, pal, 1.0)
    assert full[0].tolist() == [[255, 0, 0], [0, 0, 255]] and full[1].tolist() == [[100] * 3] * 2  # ignore shows image
    half = overlay(Image.fromarray(image), labels, pal, 0.3)
    assert half[0, 0].tolist() == [round(0.7 * 100 + 0.3 * 255), 70, 70]
    with pytest.raises(ValueError, match=r"opacity must be in \[0, 1\], got 1.5"):
        overlay(image, labels, pal, 1.5)
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\) with the label map's size \(2, 2\)"):
        overlay(np.zeros((3, 2, 3), np.uint8), labels, pal)


def test_legend_lists_present_classes_only():
    pal = generated_palette(6)
    pal[4] = (12, 34, 56)
    labels = np.zeros((120, 160), np.int64)
    labels[:, 100:] = 4
    picture = add_legend(np.zeros((120, 160, 3), np.uint8), labels, pal, [f"c{i}" for i in range(6)])
    assert picture.height == 120 and picture.width > 160
    panel = np.asarray(picture)[:, 160:]
    assert (panel == (12, 34, 56)).all(-1).any()  # class 4's swatch
    assert not (panel == pal[2]).all(-1).any()  # class 2 is absent


def test_render_uses_the_class_count_palette():
    labels = np.arange(150).reshape(10, 15) % 150
    picture = render(np.zeros((10, 15, 3), np.uint8), labels, 150, opacity=1.0)
    assert np.array_equal(np.asarray(picture), get_palette(150)[labels])
    with pytest.raises(ValueError, match="a palette of 19 colours cannot show 150 classes"):
        render(np.zeros((10, 15, 3), np.uint8), labels, 150, palette=get_palette(19))
    with pytest.raises(ValueError, match="2 class names given for 150 classes"):
        render(np.zeros((10, 15, 3), np.uint8), labels, 150, class_names=["a", "b"], legend=True)
