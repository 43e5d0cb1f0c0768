"""MMPose 1.3.2 as an oracle for the pose codec, PCK, the SegFormer++ heatmap head and the recipe's schedule.

Run it with the MMPose venv's interpreter (`make test` creates .venv-mmpose); never import it from the suite:

    .venv-mmpose/bin/python tests/oracles/mmpose_oracle.py IN.npz OUT.npz [--reference-head segformer_head.py]

IN.npz holds the cases (every key optional except where a group needs it):
  heatmaps (N, K, H, W), flipped (N, K, H, W), flip_indices (K,), input_size (2,) w, h
      -> decoded_<i>_keypoints / decoded_<i>_scores: MSRAHeatmap.decode of each heatmaps[i] (no flip), and
         flip_keypoints / flip_scores: the flip test (TopdownPoseEstimator: flip_heatmaps(flipped, 'heatmap',
         shift_heatmap=True), averaged with heatmaps), decoded per instance
  pck_pred, pck_gt (N, K, 2), pck_mask (N, K), pck_norm (N, 2), pck_thrs (T,) -> pck (T,): keypoint_pck_accuracy
  enc_keypoints (M, K, 2) in input pixels, enc_visible (M, K), sigma, heatmap_size (2,)
      -> enc_<i>_heatmaps, enc_<i>_weights: MSRAHeatmap.encode of each instance
  head_in_channels (4,), head_keypoints, head_input_hw (2,) -> head_state_<key> (its random weights, named as the
      MMPose checkpoint stores them under `head.`), head_feat_<i> (random features), head_out (eval forward)
  warp_center (P, 2), warp_scale (P, 2), warp_rot (P,), input_size -> warp (P, 2, 3): get_warp_matrix
  coco_ann_file (a COCO keypoint JSON), coco_ids, coco_img_ids (N,), coco_keypoints (N, K, 2), coco_scores (N, K),
      coco_bbox_scales (N, 2) -> coco_default / coco_plain (AP, AP50, AP75, AR: CocoMetric with its top-down
      defaults / with score_mode "bbox" and no NMS) and coco_*_kept (persons left after NMS)
  coco_ann_file, det_file (COCO detection results), det_thr, det_keypoints (M, K, 2), det_scores (M, K), input_size
      -> det_boxes (M, 4), det_box_scores, det_ids, det_img_ids: CocoDataset(bbox_file, filter_cfg bbox_score_thr)
         in top-down test mode; det_ap (AP, AP50, AP75, AR), det_kept: CocoMetric's defaults on those persons
         predicted as det_keypoints / det_scores, their bbox_scale from GetBBoxCenterScale + TopdownAffine
  aug_image (H, W, 3) uint8, aug_box (4,) xyxy, aug_keypoints (K, 2), aug_visible (K,), aug_upper_ids, flip_indices,
      aug_draws (M, 7), input_size, sigma -> aug_<i>_{crop,keypoints,heatmaps,weights}: the training pipeline
  sched_epochs, sched_epoch_len -> sched_lr (epochs x epoch_len,): the lr each iteration trains with under the
      reference's LinearLR(0..500, 0.001) + MultiStepLR(begin 0, end 70, milestones 170/200, by epoch)

The head: with --reference-head, the SegFormer++ file itself (KieDani/SegformerPlusPlus,
mmpose/mmpose/models/heads/heatmap_heads/segformer_head.py) is imported into mmpose's package and built with
SyncBN replaced by BN; without it, the same head is assembled from MMPose/mmcv parts as that file does
(ConvModule 1x1 + BN + ReLU per stage, mmpose's `resize` to the stage-1 size, ConvModule fusion, Conv2d).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np

# mmcv-lite lacks compiled ops; the project's shim stands in for them (see mmcv_ops_shim.py beside this file).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmcv_ops_shim  # noqa: E402,F401

warnings.filterwarnings("ignore")
import torch  # noqa: E402
from mmcv.cnn import ConvModule, build_conv_layer  # noqa: E402
from mmpose.codecs import MSRAHeatmap  # noqa: E402
from mmpose.evaluation.functional import keypoint_pck_accuracy  # noqa: E402
from mmpose.models.utils.ops import resize  # noqa: E402
from mmpose.models.utils.tta import flip_heatmaps  # noqa: E402
from mmpose.structures.bbox import get_warp_matrix  # noqa: E402


def decode_cases(data: dict, out: dict) -> None:
    hm = data["heatmaps"].astype(np.float32)
    w, h = (int(v) for v in data["input_size"])
    codec = MSRAHeatmap(input_size=(w, h), heatmap_size=(hm.shape[-1], hm.shape[-2]), sigma=2)
    for i, maps in enumerate(hm):
        out[f"decoded_{i}_keypoints"], out[f"decoded_{i}_scores"] = codec.decode(maps)
    if "flipped" in data:
        plain, flipped = torch.from_numpy(hm), torch.from_numpy(data["flipped"].astype(np.float32))
        back = flip_heatmaps(flipped, flip_mode="heatmap", flip_indices=[int(i) for i in data["flip_indices"]],
                             shift_heatmap=True)
        avg = ((plain + back) * 0.5).numpy()
        pairs = [codec.decode(maps) for maps in avg]
        out["flip_keypoints"] = np.concatenate([p[0] for p in pairs])
        out["flip_scores"] = np.concatenate([p[1] for p in pairs])


def encode_cases(data: dict, out: dict) -> None:
    w, h = (int(v) for v in data["input_size"])
    hw, hh = (int(v) for v in data["heatmap_size"])
    codec = MSRAHeatmap(input_size=(w, h), heatmap_size=(hw, hh), sigma=float(data["sigma"]))
    for i, (kp, vis) in enumerate(zip(data["enc_keypoints"], data["enc_visible"])):
        enc = codec.encode(kp[None].astype(np.float32), vis[None].astype(np.float32))
        out[f"enc_{i}_heatmaps"], out[f"enc_{i}_weights"] = enc["heatmaps"], enc["keypoint_weights"][0]


def _reference_head_class(path: str | None):
    if path is None:
        return None
    name = "mmpose.models.heads.heatmap_heads.segformer_head"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.SegformerHead


class FactsHead(torch.nn.Module):
    """The SegFormer++ pose head assembled from MMPose/mmcv parts, as its file does (used without the file)."""

    def __init__(self, in_channels, channels: int, num_keypoints: int):
        super().__init__()
        norm = dict(type="BN", requires_grad=True)
        self.convs = torch.nn.ModuleList(
            ConvModule(c, channels, 1, stride=1, norm_cfg=norm, act_cfg=dict(type="ReLU")) for c in in_channels)
        self.fusion_conv = ConvModule(channels * len(in_channels), channels, 1, norm_cfg=norm)
        self.final_layer = build_conv_layer(dict(type="Conv2d", in_channels=channels, out_channels=num_keypoints,
                                                 kernel_size=1))

    def forward(self, inputs):
        outs = [resize(input=conv(x), size=inputs[0].shape[2:], mode="bilinear", align_corners=False)
                for x, conv in zip(inputs, self.convs)]
        return self.final_layer(self.fusion_conv(torch.cat(outs, dim=1)))


def head_case(data: dict, out: dict, reference: str | None) -> None:
    torch.manual_seed(0)
    channels = [int(c) for c in data["head_in_channels"]]
    k = int(data["head_keypoints"])
    cls = _reference_head_class(reference)
    if cls is not None:
        head = cls(in_channels=channels, channels=256, num_keypoints=k)
        for conv in [*head.convs, head.fusion_conv]:  # its SyncBN -> BN (one process on CPU)
            setattr(conv, conv.norm_name, torch.nn.BatchNorm2d(256))
    else:
        head = FactsHead(channels, 256, k)
    out["head_source"] = np.array("reference file" if cls is not None else "facts")
    with torch.no_grad():
        for name, p in head.named_parameters():
            p.copy_(torch.randn(p.shape) * (0.05 if p.ndim > 1 else 0.2) + (1.0 if name.endswith("bn.weight") else 0))
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features))
                m.running_var.copy_(torch.rand(m.num_features) + 0.5)
    head.eval()
    h, w = (int(v) for v in data["head_input_hw"])
    feats = [torch.randn(2, c, -(-h // s), -(-w // s)) for c, s in zip(channels, (4, 8, 16, 32))]
    with torch.no_grad():
        out["head_out"] = head(feats).numpy()
    for i, f in enumerate(feats):
        out[f"head_feat_{i}"] = f.numpy()
    for key, value in head.state_dict().items():
        out[f"head_state_{key}"] = value.numpy()


def warp_cases(data: dict, out: dict) -> None:
    size = tuple(int(v) for v in data["input_size"])
    out["warp"] = np.stack([get_warp_matrix(c, s, float(r), output_size=size)
                            for c, s, r in zip(data["warp_center"], data["warp_scale"], data["warp_rot"])])


def schedule_case(data: dict, out: dict) -> None:
    from mmengine.optim.scheduler import LinearLR, MultiStepLR

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=5e-4)
    warm = LinearLR(opt, start_factor=0.001, begin=0, end=500, by_epoch=False)
    steps = MultiStepLR(opt, milestones=[170, 200], gamma=0.1, begin=0, end=70, by_epoch=True)
    lrs = []
    for _ in range(int(data["sched_epochs"])):
        for _ in range(int(data["sched_epoch_len"])):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            warm.step()  # ParamSchedulerHook: iteration-based schedulers after every iteration
        steps.step()  # epoch-based ones after every epoch
    out["sched_lr"] = np.array(lrs)


def coco_metric_case(data: dict, out: dict) -> None:
    """CocoMetric on top-down predictions, with its defaults (bbox_keypoint rescoring, OKS-NMS 0.9) and without."""
    import tempfile

    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.evaluation.metrics import CocoMetric

    meta = parse_pose_metainfo(dict(from_file="configs/_base_/datasets/coco.py"))
    samples = [dict(id=int(i), img_id=int(img), category_id=1,
                    pred_instances=dict(keypoints=kp[None], keypoint_scores=sc[None]),
                    gt_instances=dict(bbox_scores=np.ones(1, np.float32), bbox_scales=scale[None]))
               for i, img, kp, sc, scale in zip(data["coco_ids"], data["coco_img_ids"], data["coco_keypoints"],
                                                data["coco_scores"], data["coco_bbox_scales"])]
    for name, kwargs in (("default", {}), ("plain", dict(score_mode="bbox", nms_mode="none"))):
        with tempfile.TemporaryDirectory() as tmp:
            metric = CocoMetric(ann_file=str(data["coco_ann_file"]), outfile_prefix=f"{tmp}/r", **kwargs)
            metric.dataset_meta = meta
            metric.process([], samples)
            stats = metric.compute_metrics(metric.results)
            out[f"coco_{name}"] = np.array([stats[k] for k in ("AP", "AP .5", "AP .75", "AR")])
            out[f"coco_{name}_kept"] = np.array(len(json.loads(Path(f"{tmp}/r.keypoints.json").read_text())))


def detection_case(data: dict, out: dict) -> None:
    """A detector's boxes read by CocoDataset, then CocoMetric (top-down defaults) on predictions for them."""
    import tempfile

    from mmpose.datasets import CocoDataset
    from mmpose.datasets.transforms import GetBBoxCenterScale, TopdownAffine
    from mmpose.evaluation.metrics import CocoMetric

    dataset = CocoDataset(ann_file=str(data["coco_ann_file"]), bbox_file=str(data["det_file"]), data_mode="topdown",
                          test_mode=True, data_prefix=dict(img=""), pipeline=[], serialize_data=False,
                          filter_cfg=dict(bbox_score_thr=float(data["det_thr"])))
    items = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert len(items) == len(data["det_keypoints"]), (len(items), len(data["det_keypoints"]))
    w, h = (int(v) for v in data["input_size"])
    center_scale, affine = GetBBoxCenterScale(padding=1.25), TopdownAffine(input_size=(w, h))
    samples = []
    for item, keypoints, scores in zip(items, data["det_keypoints"], data["det_scores"]):
        window = affine(center_scale(dict(img=np.zeros((8, 8, 3), np.uint8), bbox=item["bbox"])))
        samples.append(dict(id=int(item["id"]), img_id=int(item["img_id"]), category_id=1,
                            pred_instances=dict(keypoints=keypoints[None], keypoint_scores=scores[None]),
                            gt_instances=dict(bbox_scores=item["bbox_score"], bbox_scales=window["bbox_scale"])))
    out["det_boxes"] = np.stack([item["bbox"][0] for item in items])
    out["det_box_scores"] = np.array([item["bbox_score"][0] for item in items])
    out["det_ids"] = np.array([item["id"] for item in items])
    out["det_img_ids"] = np.array([item["img_id"] for item in items])
    with tempfile.TemporaryDirectory() as tmp:
        metric = CocoMetric(ann_file=str(data["coco_ann_file"]), outfile_prefix=f"{tmp}/r")
        metric.dataset_meta = dataset.metainfo
        metric.process([], samples)
        stats = metric.compute_metrics(metric.results)
        out["det_ap"] = np.array([stats[k] for k in ("AP", "AP .5", "AP .75", "AR")])
        out["det_kept"] = np.array(len(json.loads(Path(f"{tmp}/r.keypoints.json").read_text())))


def augment_case(data: dict, out: dict) -> None:
    """GetBBoxCenterScale, RandomFlip, RandomHalfBody, RandomBBoxTransform (its draws injected), TopdownAffine
    (cv2.warpAffine) and GenerateTarget(MSRAHeatmap) on one image, per case of aug_draws rows
    (flip, half_body, prefer_upper, shift x, shift y, scale, rotation)."""
    from mmpose.datasets.transforms import (
        GenerateTarget,
        GetBBoxCenterScale,
        RandomBBoxTransform,
        RandomFlip,
        RandomHalfBody,
        TopdownAffine,
    )

    w, h = (int(v) for v in data["input_size"])
    upper = [int(i) for i in data["aug_upper_ids"]]
    for i, (flip, half, upper_first, sx, sy, scale, rot) in enumerate(data["aug_draws"]):
        box_transform = RandomBBoxTransform()
        box_transform._get_transform_params = lambda n, sx=sx, sy=sy, scale=scale, rot=rot: (
            np.array([[sx, sy]], np.float32), np.array([[scale]], np.float32), np.array([rot], np.float32))
        steps = [GetBBoxCenterScale(padding=1.25), RandomFlip(prob=float(flip), direction="horizontal"),
                 RandomHalfBody(prob=float(half), upper_prioritized_prob=float(upper_first)), box_transform,
                 TopdownAffine(input_size=(w, h)),
                 GenerateTarget(encoder=dict(type="MSRAHeatmap", input_size=(w, h), heatmap_size=(w // 4, h // 4),
                                             sigma=float(data["sigma"])))]
        image = data["aug_image"]
        results = dict(img=image.copy(), img_shape=image.shape[:2], bbox=data["aug_box"][None].astype(np.float32),
                       bbox_score=np.ones(1, np.float32), keypoints=data["aug_keypoints"][None].astype(np.float32),
                       keypoints_visible=data["aug_visible"][None].astype(np.float32),
                       flip_indices=[int(k) for k in data["flip_indices"]], upper_body_ids=upper,
                       lower_body_ids=[k for k in range(len(data["aug_visible"])) if k not in upper])
        for step in steps:
            results = step(results)
        out[f"aug_{i}_crop"] = results["img"]
        out[f"aug_{i}_keypoints"] = results["transformed_keypoints"][0]
        out[f"aug_{i}_heatmaps"] = results["heatmaps"]
        out[f"aug_{i}_weights"] = results["keypoint_weights"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--reference-head", help="the SegFormer++ segformer_head.py, imported into mmpose")
    args = parser.parse_args()
    data = dict(np.load(args.input))
    out: dict = {}
    if "heatmaps" in data:
        decode_cases(data, out)
    if "pck_pred" in data:
        out["pck"] = np.array([keypoint_pck_accuracy(data["pck_pred"], data["pck_gt"], data["pck_mask"].astype(bool),
                                                     float(t), data["pck_norm"].copy())[1] for t in data["pck_thrs"]])
    if "enc_keypoints" in data:
        encode_cases(data, out)
    if "head_in_channels" in data:
        head_case(data, out, args.reference_head)
    if "warp_center" in data:
        warp_cases(data, out)
    if "sched_epochs" in data:
        schedule_case(data, out)
    if "coco_ann_file" in data:
        coco_metric_case(data, out)
    if "det_file" in data:
        detection_case(data, out)
    if "aug_draws" in data:
        augment_case(data, out)
    np.savez(args.output, **out)


if __name__ == "__main__":
    main()
