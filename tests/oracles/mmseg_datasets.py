"""Runs inside the MMSegmentation venv: what mmseg's datasets read from the fixture trees of test_more_datasets.py.

Usage: python mmseg_datasets.py SPEC.json. SPEC: {"shim", "coco", "coco_raw", "coco_converted", "context", "voc",
"out"}. Writes OUT.npz (label maps as mmseg's LoadAnnotations returns them, per dataset and sample) and OUT.json
(class names, palettes, image/label paths in order, and the COCO-Stuff converter's id table).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

spec = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, str(Path(spec["shim"]).parent))
import mmcv_ops_shim  # noqa: E402,F401  (before mmseg)
import mmseg  # noqa: E402
from mmseg.datasets import COCOStuffDataset, PascalContextDataset, PascalContextDataset59, PascalVOCDataset  # noqa: E402
from mmseg.datasets.transforms import LoadAnnotations  # noqa: E402

converter_path = Path(mmseg.__file__).parent / ".mim" / "tools" / "dataset_converters" / "coco_stuff164k.py"
module_spec = importlib.util.spec_from_file_location("coco_stuff164k", converter_path)
converter = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(converter)

arrays, meta = {}, {"classes": {}, "palette": {}, "samples": {}}
datasets = {
    "coco": COCOStuffDataset(data_root=spec["coco"], data_prefix=dict(img_path="images/val2017",
                                                                      seg_map_path="annotations/val2017")),
    "context60": PascalContextDataset(data_root=spec["context"], ann_file="ImageSets/SegmentationContext/val.txt",
                                      data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassContext")),
    "context59": PascalContextDataset59(data_root=spec["context"], ann_file="ImageSets/SegmentationContext/val.txt",
                                        data_prefix=dict(img_path="JPEGImages",
                                                         seg_map_path="SegmentationClassContext")),
    "voc_train": PascalVOCDataset(data_root=spec["voc"], ann_file="ImageSets/Segmentation/train.txt",
                                  data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass")),
    "voc_aug": PascalVOCDataset(data_root=spec["voc"], ann_file="ImageSets/Segmentation/aug.txt",
                                data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassAug")),
}
for key, dataset in datasets.items():
    meta["classes"][key] = list(dataset.metainfo["classes"])
    meta["palette"][key] = [list(c) for c in dataset.metainfo["palette"]]
    meta["samples"][key] = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        results = LoadAnnotations(reduce_zero_label=info["reduce_zero_label"])(
            dict(seg_map_path=info["seg_map_path"], reduce_zero_label=info["reduce_zero_label"], seg_fields=[]))
        arrays[f"{key}/{i}"] = results["gt_seg_map"]
        meta["samples"][key].append([info["img_path"], info["seg_map_path"]])

Path(spec["coco_converted"], "val2017").mkdir(parents=True, exist_ok=True)
for raw in sorted(Path(spec["coco_raw"]).glob("*.png")):
    converter.convert_to_trainID(str(raw), spec["coco_converted"], is_train=False)
meta["coco_table"] = {str(k): v for k, v in converter.clsID_to_trID.items()}
np.savez(spec["out"] + ".npz", **arrays)
Path(spec["out"] + ".json").write_text(json.dumps(meta))
