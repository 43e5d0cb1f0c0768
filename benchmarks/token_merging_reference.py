"""SegFormer++ token merging: parity with, and speed against, the reference implementation.

The reference is KieDani/SegformerPlusPlus (commit 7fb879716c1e), its `model_without_OpenMMLab`
package, run from a scratch folder outside this project (never copied into it):

    git --git-dir=<fetched mirror> archive HEAD model_without_OpenMMLab | tar x -C /work/scratch/spp
    python3 -m venv /work/scratch/spp/venv
    /work/scratch/spp/venv/bin/pip install torch==2.13.0 tomesd omegaconf addict yapf rich numpy packaging
    REF="env PYTHONPATH=/work/scratch/spp/model_without_OpenMMLab /work/scratch/spp/venv/bin/python"

Parity (B0, random weights made by the reference, 19 classes):
    $REF benchmarks/token_merging_reference.py reference --out /tmp/spp_ref.pt
    .venv/bin/python benchmarks/token_merging_reference.py compare --ref /tmp/spp_ref.pt

`reference` imports only torch, tomesd and the reference: it builds the reference model, gives
every LayerNorm/BatchNorm non-trivial random affine weights and statistics, and saves the state dict,
the inputs, its logits for none/hq/fast/2x2 and the result of single `tomesd` bipartite-matching
calls (torch.save of tensors and plain containers only; we read it with weights_only=True).
`compare` maps the weights into our layout (`reference_to_ours`), runs our model and reports:
- matching: for each token, the smallest original position of the group it ends up in (a
  canonical form: tomesd orders its src/dst sets with a non-stable argsort, so raw indices are a
  permutation of ours); must be identical;
- logits: max abs difference and argmax agreement per strategy and input.

Making the reference actually apply `bsm_fast` and `n2d_2x2`: its presets in
`segformer_plusplus/utils/tome_presets.py` use the mode names 'bsm_r2D' and 'neighbor_2D', which
its backbone never checks (it tests 'bsm' and 'n2d'), so as shipped they run the unmerged model.
Before building, `reference` renames them in the in-memory preset dicts ('bsm_r2D' -> 'bsm',
'neighbor_2D' -> 'n2d'; files untouched). That yields exactly the settings of the reference's own
mmseg configs (`mmsegmentation/local_configs/cityscapes/B5/segformer-cityscapes-b5-{bsm-fast,n2d-2x2}.py`);
the script asserts every attention layer then carries a mode its forward acts on.

Speed (CPU, batch 1, fp32, median of --runs after one warm-up per strategy, runs interleaved
round-robin over the strategies; wall time and process CPU time):
    .venv/bin/python benchmarks/token_merging_reference.py bench --variant b5 --size 1024 1024 [--threads 1]
    $REF benchmarks/token_merging_reference.py bench-reference --variant b5 --size 1024 1024 [--threads 1]
On a 2-core machine shared with other jobs, OpenMP's default spin-waiting makes 2-thread wall times
swing by 2x and penalises code with more parallel regions (the merged models) most: measure with
--threads 1 (compare process CPU time) or export OMP_WAIT_POLICY=PASSIVE for 2-thread runs.
To time both as the `segformer` CLI runs (segformer.runtime.retain_freed_memory), prefix both commands with
`env MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647` (the same glibc settings; the
reference side must not import segformer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

STRATEGIES = ("none", "hq", "fast", "2x2")
REF_PRESET = {"hq": "bsm_hq", "fast": "bsm_fast", "2x2": "n2d_2x2"}
INPUTS = {"512x512": (2, 512, 512), "520x776": (1, 520, 776)}
# (height, width, stride, ratio) of the single bipartite-matching calls compared.
MATCHING_CASES = [(32, 32, 2, 0.6), (13, 18, 4, 0.8), (25, 33, 4, 0.9), (64, 64, 4, 0.8)]


# ---------------------------------------------------------------------------------------------------
# Reference side (run with the reference's venv; imports nothing from this project)


def _reference_model(variant: str, strategy: str, num_classes: int = 19):
    from segformer_plusplus.build_model import create_model
    from segformer_plusplus.utils import tome_presets

    renames = {"bsm_r2D": "bsm", "neighbor_2D": "n2d"}
    for stage_cfgs in tome_presets.values():
        for cfg in stage_cfgs:
            for key in ("q_mode", "kv_mode"):
                cfg[key] = renames.get(cfg.get(key), cfg.get(key))
    model = create_model(variant, None if strategy == "none" else REF_PRESET[strategy], out_channels=num_classes,
                         pretrained=False).eval()
    for layer in model.backbone.layers:
        for block in layer[1]:
            assert block.attn.q_mode in (None, "bsm", "n2d") and block.attn.kv_mode in (None, "bsm", "n2d")
            if strategy != "none":
                assert block.attn.q_mode or block.attn.kv_mode, f"{strategy}: a stage runs unmerged"
    return model


def _randomize_norms(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def _canonical_groups(unmerge, b: int, m: int) -> torch.Tensor:
    """Per token, the smallest original position in its merged group (ordering-independent)."""
    slot = unmerge(torch.arange(m, dtype=torch.float64).view(1, m, 1).expand(b, m, 1).contiguous())[..., 0].long()
    return _groups_from_slot(slot)


def _groups_from_slot(slot: torch.Tensor) -> torch.Tensor:
    n = slot.shape[1]
    pos = torch.arange(n).expand_as(slot)
    first = torch.full((slot.shape[0], int(slot.max()) + 1), n, dtype=torch.long)
    first = first.scatter_reduce(1, slot, pos, reduce="amin")
    return torch.gather(first, 1, slot)


def run_reference(out: str) -> None:
    from tomesd.merge import bipartite_soft_matching_random2d

    gen = torch.Generator().manual_seed(0)
    base = _reference_model("b0", "none")
    _randomize_norms(base, gen)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    inputs = {name: torch.randn(shape[0], 3, *shape[1:], generator=gen) for name, shape in INPUTS.items()}
    logits = {}
    for strategy in STRATEGIES:
        model = _reference_model("b0", strategy)
        model.load_state_dict(state)
        with torch.no_grad():
            for name, x in inputs.items():
                logits[f"{strategy}/{name}"] = model(x)
    matching = []
    for h, w, s, ratio in MATCHING_CASES:
        metric = torch.randn(2, h * w, 64, generator=gen)
        r = int(h * w * ratio)
        merge, unmerge = bipartite_soft_matching_random2d(metric, w=w, h=h, sx=s, sy=s, r=r, no_rand=True)
        m = merge(metric).shape[1]
        matching.append({"h": h, "w": w, "stride": s, "r": r, "metric": metric,
                         "groups": _canonical_groups(unmerge, 2, m)})
    torch.save({"state_dict": state, "inputs": inputs, "logits": logits, "matching": matching}, out)
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------------
# Our side


def reference_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's (mmseg-layout) SegFormer state dict in our key layout."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "backbone":
            i, kind = parts[2], parts[3]
            if kind == "0":  # patch embedding
                name = "proj" if parts[4] == "projection" else "norm"
                out[f"encoder.stages.{i}.patch_embed.{name}.{parts[5]}"] = value
            elif kind == "2":  # stage-end norm
                out[f"encoder.stages.{i}.norm.{parts[4]}"] = value
            else:
                prefix, rest = f"encoder.stages.{i}.blocks.{parts[4]}", ".".join(parts[5:])
                if rest.startswith("attn.attn.in_proj_"):  # rows [q; k; v]; ours: q and kv = [k; v]
                    c = value.shape[0] // 3
                    suffix = rest.rsplit("_", 1)[1]
                    out[f"{prefix}.attn.q.{suffix}"] = value[:c]
                    out[f"{prefix}.attn.kv.{suffix}"] = value[c:]
                elif rest.startswith("attn.attn.out_proj."):
                    out[f"{prefix}.attn.proj.{parts[-1]}"] = value
                elif rest.startswith("ffn.layers."):
                    name = {"0": "fc1", "1": "dwconv", "4": "fc2"}[parts[7]]
                    out[f"{prefix}.mlp.{name}.{parts[-1]}"] = value.flatten(1) if name != "dwconv" and \
                        parts[-1] == "weight" else value
                else:  # norm1, norm2, attn.sr, attn.norm
                    out[f"{prefix}.{rest}"] = value
        else:
            rest = ".".join(parts[1:])
            rest = rest.replace("fusion_conv.conv.", "linear_fuse.").replace("fusion_conv.bn.", "bn.")
            out["decode_head." + rest.replace("conv_seg.", "classifier.")] = value
    return out


def our_model(variant: str, num_classes: int = 19):
    from segformer.models import SegFormer, SegFormerConfig, mit_config

    enc = mit_config(variant, block_eps=1e-6, stage_eps=1e-6, patch_embed_eps=1e-6, sr_eps=1e-6)
    return SegFormer(SegFormerConfig(encoder=enc, num_classes=num_classes, decoder_style="mmseg",
                                     decoder_dim=256)).eval()


def run_compare(ref_path: str) -> None:
    from segformer.models.token_merging import bipartite_soft_matching

    ref = torch.load(ref_path, weights_only=True)
    print("matching (canonical groups identical?):")
    for case in ref["matching"]:
        merge = bipartite_soft_matching(case["metric"], case["h"], case["w"], (case["stride"],) * 2, case["r"])
        same = torch.equal(_groups_from_slot(merge.slot), case["groups"])
        verdict = "identical" if same else "DIFFERENT"
        print(f"  {case['h']}x{case['w']} stride {case['stride']} r={case['r']}: {verdict}")
    model = our_model("b0")
    model.load_state_dict(reference_to_ours(ref["state_dict"]), strict=True)
    print("| strategy | input | max abs diff ours vs ref | argmax agreement | ref: max abs logit | "
          "ref: max abs change vs unmerged |")
    print("|---|---|---|---|---|---|")
    for strategy in STRATEGIES:
        model.set_token_merging(None if strategy == "none" else strategy)
        with torch.no_grad():
            for name, x in ref["inputs"].items():
                ours, theirs = model(x), ref["logits"][f"{strategy}/{name}"]
                diff = (ours - theirs).abs().max().item()
                agree = (ours.argmax(1) == theirs.argmax(1)).float().mean().item()
                change = (theirs - ref["logits"][f"none/{name}"]).abs().max().item()
                print(f"| {strategy} | {name} x{x.shape[0]} | {diff:.2e} | {100 * agree:.3f}% | "
                      f"{theirs.abs().max().item():.2f} | {change:.3f} |")


# ---------------------------------------------------------------------------------------------------
# Speed


def run_bench(impl: str, variant: str, size: tuple[int, int], runs: int, strategies: list[str],
              json_out: str | None, threads: int | None) -> None:
    """Median seconds per strategy; runs are interleaved round-robin so machine load drifts hit all alike.

    Wall time is what a user sees; process CPU time (all threads) is less sensitive to other jobs
    sharing the cores.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    if impl == "ours":
        model = our_model(variant)

        def forward(strategy):
            model.set_token_merging(None if strategy == "none" else strategy)
            return model(x)
    else:
        models = {s: _reference_model(variant, s) for s in strategies}
        state = models[strategies[0]].state_dict()
        for m in models.values():
            m.load_state_dict(state)

        def forward(strategy):
            return models[strategy](x)

    wall: dict[str, list[float]] = {s: [] for s in strategies}
    cpu: dict[str, list[float]] = {s: [] for s in strategies}
    with torch.inference_mode():
        for strategy in strategies:
            forward(strategy)  # warm-up
        for _ in range(runs):
            for strategy in strategies:
                start, start_cpu = time.perf_counter(), time.process_time()
                forward(strategy)
                wall[strategy].append(time.perf_counter() - start)
                cpu[strategy].append(time.process_time() - start_cpu)
    med = {s: statistics.median(t) for s, t in wall.items()}
    med_cpu = {s: statistics.median(t) for s, t in cpu.items()}
    for s in strategies:
        speedup = med["none"] / med[s] if "none" in med else float("nan")
        speedup_cpu = med_cpu["none"] / med_cpu[s] if "none" in med else float("nan")
        print(f"{impl} {variant} {size[0]}x{size[1]} threads={torch.get_num_threads()} {s}: wall {med[s]:.3f} s "
              f"({speedup:.2f}x), process CPU {med_cpu[s]:.3f} s ({speedup_cpu:.2f}x); wall runs: "
              + " ".join(f"{v:.2f}" for v in wall[s]), flush=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"impl": impl, "variant": variant, "size": size, "runs": runs, "threads": torch.get_num_threads(),
                       "median_wall_s": med, "median_cpu_s": med_cpu, "wall_s": wall, "cpu_s": cpu}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reference", help="run the reference (its venv); save weights, inputs, logits, matchings")
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare", help="run ours on the saved reference data and report the differences")
    p.add_argument("--ref", required=True)
    for name in ("bench", "bench-reference"):
        who = "ours" if name == "bench" else "the reference"
        p = sub.add_parser(name, help=f"time none/hq/fast/2x2 ({who})")
        p.add_argument("--variant", default="b5")
        p.add_argument("--size", type=int, nargs=2, default=(1024, 1024))
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
        p.add_argument("--json")
        p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.cmd == "reference":
        run_reference(args.out)
    elif args.cmd == "compare":
        run_compare(args.ref)
    else:
        run_bench("ours" if args.cmd == "bench" else "reference", args.variant, tuple(args.size), args.runs,
                  args.strategies, args.json, args.threads)


if __name__ == "__main__":
    main()
