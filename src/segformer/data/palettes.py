"""Class names and colour palettes: ADE20K (150), Cityscapes (19), COCO-Stuff (171), Pascal Context (60/59), VOC (21),
and a deterministic palette for any count."""

from __future__ import annotations

import numpy as np

from . import class_lists as cl

# ADE20K (SceneParse150) after `reduce_zero_label`: index 0 is "wall". Names and colours as MMSegmentation's
# ADE20KDataset (the colours are also those of the official ADE20K toolkit).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
)
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255), (255, 71, 0),
    (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255),
    (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255),
    (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0),
    (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184), (0, 31, 255),
    (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255),
    (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0),
    (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163), (255, 204, 0), (255, 0, 143),
    (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212),
    (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204),
    (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184),
    (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
# Cityscapes 19 train ids, with the official cityscapesScripts colours.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

DATASETS = {"ade20k": (ADE20K_CLASSES, ADE20K_PALETTE), "cityscapes": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE),
            "coco_stuff": (cl.COCO_STUFF_CLASSES, cl.COCO_STUFF_PALETTE),
            # mmseg's Pascal Context palettes are ADE20K's first 60 colours (59 classes: without the first)
            "pascal_context": (cl.PASCAL_CONTEXT_CLASSES, ADE20K_PALETTE[:60]),
            "pascal_context_59": (cl.PASCAL_CONTEXT59_CLASSES, ADE20K_PALETTE[1:60]),
            "voc": (cl.VOC_CLASSES, cl.VOC_PALETTE)}


def generated_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, the same for the same count: the Pascal VOC colour map.

    Class i spreads its bits over R, G and B from the most significant bit down, so neighbouring indices get
    very different colours and 2**24 classes stay distinct. Index 0 is black. Written out because it is a few
    lines of numpy and no dependency of ours ships it.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    index = np.arange(num_classes, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= ((index >> channel) & 1) << shift
        index = index >> 3
    return palette.astype(np.uint8)


def get_palette(num_classes: int, dataset: str | None = None) -> np.ndarray:
    """(num_classes, 3) uint8 palette: `dataset`'s ("ade20k", "cityscapes", or "generated" for
    `generated_palette`) if given; otherwise ADE20K for 150 classes, Cityscapes for 19, generated for any other."""
    dataset = dataset or _dataset_for(num_classes)
    if dataset in (None, "generated"):
        return generated_palette(num_classes)
    palette = np.asarray(_lookup(dataset)[1], dtype=np.uint8)
    if num_classes > len(palette):
        raise ValueError(f"the {dataset} palette has {len(palette)} colours, too few for {num_classes} classes; "
                         f"use dataset=None for a generated palette")
    return palette[:num_classes]


def get_class_names(num_classes: int, dataset: str | None = None) -> list[str]:
    """Class names, chosen like `get_palette`; "class_<i>" where no dataset applies."""
    dataset = dataset or _dataset_for(num_classes)
    names = list(_lookup(dataset)[0]) if dataset not in (None, "generated") else []
    return names[:num_classes] + [f"class_{i}" for i in range(len(names), num_classes)]


def _dataset_for(num_classes: int) -> str | None:
    return next((name for name, (classes, _) in DATASETS.items() if len(classes) == num_classes), None)


def _lookup(dataset: str) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown palette {dataset!r}; accepted: {', '.join(DATASETS)}, generated")
    return DATASETS[dataset]
