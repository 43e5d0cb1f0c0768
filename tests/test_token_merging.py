"""SegFormer++ token merging: checked against a slow, direct re-derivation of the algorithm written here.

(Parity with the reference implementation itself: benchmarks/token_merging_reference.py.)
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from segformer.models import SegFormer, SegFormerConfig, create_model, mit_config
from segformer.models.mit import EfficientSelfAttention
from segformer.models.token_merging import (
    PRESETS,
    BipartiteMerge,
    PoolMerge,
    StageMerging,
    StageTokenMerging,
    TokenMergingConfig,
    bipartite_soft_matching,
    resolve_token_merging,
)

# ---------------------------------------------------------------------------------------------------
# The slow derivation: plain Python loops over tokens, straight from the description of the method.


def slow_bsm_groups(metric: torch.Tensor, h: int, w: int, stride: tuple[int, int], r: int) -> list[list[int]]:
    """Groups of token positions after bipartite soft matching of one image's (N, C) metric."""
    sy, sx = stride
    dst = [y * w + x for y in range(0, (h // sy) * sy, sy) for x in range(0, (w // sx) * sx, sx)]
    src = [p for p in range(h * w) if p not in set(dst)]
    unit = [metric[p] / metric[p].norm() for p in range(h * w)]
    best = {}
    for p in src:
        sims = [float(unit[p] @ unit[d]) for d in dst]
        k = max(range(len(dst)), key=lambda i: sims[i])
        best[p] = (sims[k], dst[k])
    merged = set(sorted(src, key=lambda p: -best[p][0])[: min(r, len(src))])
    groups = {d: [d] for d in dst}
    for p in src:
        if p in merged:
            groups[best[p][1]].append(p)
        else:
            groups[p] = [p]
    return list(groups.values())


def slow_pool_groups(h: int, w: int, stride: tuple[int, int]) -> list[list[int]]:
    sy, sx = stride
    return [[y * w + x for y in range(cy * sy, min(cy * sy + sy, h)) for x in range(cx * sx, min(cx * sx + sx, w))]
            for cy in range(math.ceil(h / sy)) for cx in range(math.ceil(w / sx))]


def slow_attention(attn: EfficientSelfAttention, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
    """Multi-head attention of one image, head by head with an explicit softmax."""
    c = xq.shape[-1]
    hd = c // attn.num_heads
    q = xq @ attn.q.weight.T + attn.q.bias
    kv = xkv @ attn.kv.weight.T + attn.kv.bias
    k, v = kv[:, :c], kv[:, c:]
    heads = []
    for i in range(attn.num_heads):
        s = slice(i * hd, (i + 1) * hd)
        heads.append(torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(hd), dim=-1) @ v[:, s])
    return torch.cat(heads, -1) @ attn.proj.weight.T + attn.proj.bias


def slow_groups(mode, ratio, stride, tokens, h, w):
    if mode == "pool":
        return slow_pool_groups(h, w, stride)
    return slow_bsm_groups(tokens, h, w, stride, int(tokens.shape[0] * ratio))


def slow_merged_attention(attn: EfficientSelfAttention, s: StageMerging, x: torch.Tensor, h: int, w: int):
    """Merge kv and/or q tokens into group means, attend, copy each group's output to its members."""
    xkv = attn.reduce(x[None], h, w)[0]
    if s.kv_mode is not None:
        groups = slow_groups(s.kv_mode, s.kv_ratio, s.kv_stride, xkv, h // attn.sr_ratio, w // attn.sr_ratio)
        xkv = torch.stack([xkv[g].mean(0) for g in groups])
    q_groups = [[p] for p in range(h * w)]
    if s.q_mode is not None:
        q_groups = slow_groups(s.q_mode, s.q_ratio, s.q_stride, x, h, w)
    y = slow_attention(attn, torch.stack([x[g].mean(0) for g in q_groups]), xkv)
    out = torch.empty_like(x)
    for i, group in enumerate(q_groups):
        out[group] = y[i]
    return out


def canonical(groups_or_slot) -> list[int]:
    """Per token, the smallest position in its group: the same for any ordering of the groups."""
    if isinstance(groups_or_slot, torch.Tensor):
        slot = groups_or_slot.tolist()
        first = {}
        for p, g in enumerate(slot):
            first.setdefault(g, p)
        return [first[g] for g in slot]
    out = [0] * sum(len(g) for g in groups_or_slot)
    for g in groups_or_slot:
        for p in g:
            out[p] = min(g)
    return out


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,stride,ratio", [(9, 13, (2, 2), 0.6), (9, 13, (4, 4), 0.8), (12, 8, (4, 4), 0.9),
                                               (7, 10, (3, 2), 0.5), (5, 6, (2, 2), 1.0)])
def test_matching_equals_slow_derivation(h, w, stride, ratio):
    torch.manual_seed(0)
    metric = torch.randn(3, h * w, 16)
    r = int(h * w * ratio)
    merge = bipartite_soft_matching(metric, h, w, stride, r)
    for b in range(3):
        expected = slow_bsm_groups(metric[b], h, w, stride, r)
        assert canonical(merge.slot[b]) == canonical(expected)
        assert merge.num_merged == len(expected)


SETTINGS = [
    StageMerging(kv_mode="bsm", kv_ratio=0.6, kv_stride=2),
    StageMerging(q_mode="bsm", q_ratio=0.8, q_stride=4),
    StageMerging(q_mode="pool", q_stride=(2, 2)),
    StageMerging(q_mode="bsm", q_ratio=0.5, q_stride=(3, 2), kv_mode="pool", kv_stride=(2, 3)),
    StageMerging(q_mode="pool", q_stride=(4, 3), kv_mode="bsm", kv_ratio=0.9, kv_stride=4),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"q-{s.q_mode}-kv-{s.kv_mode}")
@pytest.mark.parametrize("sr", [1, 2])
def test_merged_attention_equals_slow_derivation(setting, sr):
    torch.manual_seed(1)
    h, w = 9, 13 if sr == 1 else 17  # odd sizes: leftover rows/columns, partial pooling windows
    attn = EfficientSelfAttention(16, 2, sr, True, 1e-5).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.5)
        x = torch.randn(2, h * w, 16)
        ours = StageTokenMerging(0, setting)(attn, x, attn.reduce(x, h, w), h, w)
        for b in range(2):
            torch.testing.assert_close(ours[b], slow_merged_attention(attn, setting, x[b], h, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("h,w", [(9, 13), (8, 8), (5, 3)])
def test_pool_merge_equals_avg_pool_ceil_mode(h, w):
    x = torch.randn(2, h * w, 4)
    pool = PoolMerge(h, w, (2, 2))
    expected = torch.nn.functional.avg_pool2d(x.view(2, h, w, 4).permute(0, 3, 1, 2), 2, 2, ceil_mode=True)
    torch.testing.assert_close(pool.merge(x), expected.flatten(2).transpose(1, 2))
    groups = slow_pool_groups(h, w, (2, 2))
    y = torch.randn(2, len(groups), 4)
    out = pool.unmerge(y)
    for i, g in enumerate(groups):
        assert torch.equal(out[:, g], y[:, i : i + 1].expand(2, len(g), 4))


def scatter_mean_merge(self: BipartiteMerge, x: torch.Tensor) -> torch.Tensor:
    """The merge as the reference writes it: scatter_reduce "mean" (which has no ONNX op)."""
    index = self.slot.unsqueeze(-1).expand_as(x)
    return x.new_zeros(x.shape[0], self.num_merged, x.shape[2]).scatter_reduce(1, index, x, "mean",
                                                                               include_self=False)


def test_sum_count_merge_equals_scatter_mean(monkeypatch):
    torch.manual_seed(2)
    x = torch.randn(2, 15 * 11, 8)
    merge = bipartite_soft_matching(x, 15, 11, (2, 2), 100)
    torch.testing.assert_close(merge.merge(x), scatter_mean_merge(merge, x), atol=1e-6, rtol=1e-6)
    model = tiny_model(token_merging="hq")
    img = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        ours = model(img)
        monkeypatch.setattr(BipartiteMerge, "merge", scatter_mean_merge)
        torch.testing.assert_close(model(img), ours, atol=1e-5, rtol=1e-5)


def test_merge_gradients():
    torch.manual_seed(3)
    x = torch.randn(2, 6 * 7, 3, dtype=torch.float64, requires_grad=True)
    merge = bipartite_soft_matching(x, 6, 7, (2, 2), 20)
    assert isinstance(merge, BipartiteMerge) and merge.num_merged == 42 - 20
    assert torch.autograd.gradcheck(lambda t: merge.unmerge(merge.merge(t)), (x,))
    pool = PoolMerge(6, 7, (2, 2))
    assert torch.autograd.gradcheck(lambda t: pool.unmerge(pool.merge(t)), (x,))


# ---------------------------------------------------------------------------------------------------
# Whole models


def tiny_config(**kw) -> SegFormerConfig:
    enc = mit_config("b0", embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), drop_path_rate=0.0)
    return SegFormerConfig(encoder=enc, num_classes=5, decoder_dim=16, **kw)


def tiny_model(**kw) -> SegFormer:
    torch.manual_seed(0)
    model = SegFormer(tiny_config(**kw)).eval()
    with torch.no_grad():  # non-trivial norms and attention weights, so that merging visibly changes the output
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, EfficientSelfAttention):
                for linear in (m.q, m.kv, m.proj):
                    linear.weight.normal_(0, 0.3)
    return model


def test_presets_are_the_papers_settings():
    hq, fast, pool = PRESETS["hq"].stages, PRESETS["fast"].stages, PRESETS["2x2"].stages
    assert hq[:2] == (StageMerging(kv_mode="bsm", kv_ratio=0.6, kv_stride=(2, 2)),) * 2
    assert hq[2:] == (StageMerging(q_mode="bsm", q_ratio=0.8, q_stride=(4, 4)),) * 2
    assert fast[:2] == (StageMerging(kv_mode="bsm", kv_ratio=0.9, kv_stride=(4, 4)),) * 2
    assert fast[2:] == (StageMerging(q_mode="bsm", q_ratio=0.9, q_stride=(4, 4)),) * 2
    assert pool == (StageMerging(q_mode="pool", q_stride=(2, 2)),) * 4
    assert PRESETS["downsample"].downsample and not any(s.active for s in PRESETS["downsample"].stages)


def test_off_is_bit_identical_and_presets_change_output():
    model = tiny_model()
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        plain = model(x)
        for preset in ("hq", "fast", "2x2", "downsample"):
            model.set_token_merging(preset)
            merged = model(x)
            assert merged.shape == plain.shape
            assert (merged - plain).abs().max() > 1e-3, preset
        model.set_token_merging(None)
        assert torch.equal(model(x), plain)
    assert model.config.token_merging is None
    assert all(b.attn.token_merging is None for s in model.encoder.stages for b in s.blocks)


@pytest.mark.parametrize("preset", ["hq", "fast", "2x2", "downsample"])
def test_batch_of_two_equals_two_batches_of_one(preset):
    model = tiny_model(token_merging=preset)
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        both = model(x)
        single = torch.cat([model(x[:1]), model(x[1:])])
    torch.testing.assert_close(both, single, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:token merging")  # 97x131: fast's stride-4 kv cells do not fit stages 1-2
@pytest.mark.parametrize("size", [(97, 131), (128, 128), (1000, 750)])
def test_sizes(size):
    model = tiny_model()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        plain = model(x)
        for preset in ("hq", "fast", "2x2", "downsample"):
            model.set_token_merging(preset)
            out = model(x)
            assert out.shape == plain.shape and torch.isfinite(out).all()


def test_small_input_falls_back_with_one_warning():
    model = tiny_model(token_merging="hq")
    x = torch.randn(1, 3, 64, 64)  # stage 4 is 2x2 tokens: no full 4x4 merge cell
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = model(x)
            model(x)
    messages = [str(w.message) for w in caught if "token merging" in str(w.message)]
    assert len(messages) == 1 and "stage 4" in messages[0], messages
    reference = tiny_model(token_merging=list(PRESETS["hq"].stages[:3]) + [None])  # stage 4 left unmerged
    with torch.no_grad():
        assert torch.equal(out, reference(x))
    with warnings.catch_warnings(record=True):
        for preset in ("fast", "2x2"):
            model.set_token_merging(preset)
            assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()


def test_downsample_halves_the_input():
    model = tiny_model()
    x = torch.randn(1, 3, 192, 256)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(model(x[:, :, ::2, ::2]), size=(48, 64), mode="bilinear",
                                                   align_corners=False)
        model.set_token_merging("downsample")
        torch.testing.assert_close(model(x), expected)


def test_training_with_merging():
    model = tiny_model(token_merging="hq").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, labels = torch.randn(2, 3, 128, 160), torch.randint(0, 5, (2, 128, 160))
    losses = []
    for _ in range(4):
        loss = model.loss(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        # gradients reach the projections of merged sequences: kv in stage 1, q in stage 3
        assert model.encoder.stages[0].blocks[0].attn.kv.weight.grad.abs().sum() > 0
        assert model.encoder.stages[2].blocks[0].attn.q.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


@pytest.mark.filterwarnings("ignore")  # the exporter's own chatter
def test_onnx_export_of_hq_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # torch's default (dynamo) ONNX exporter
    model = tiny_model(token_merging="hq")
    x = torch.randn(1, 3, 232, 296)  # odd token grids in stages 2-4
    torch.onnx.export(model, (x,), str(tmp_path / "hq.onnx"), dynamo=True)
    session = ort.InferenceSession(str(tmp_path / "hq.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert out.shape == expected.shape and abs(out - expected).max() <= 1e-4


# ---------------------------------------------------------------------------------------------------
# Strategies: names, lists, YAML, config round trip, errors


def test_strategy_forms(tmp_path):
    assert resolve_token_merging("HQ") is PRESETS["hq"] and resolve_token_merging("bsm_fast") is PRESETS["fast"]
    assert resolve_token_merging(None) is None
    # the reference's own tome_cfg spelling (docs/run/token_merging.md)
    ref_style = [dict(kv_mode="bsm", kv_r=0.6, kv_sx=2, kv_sy=2)] * 2
    ref_style += [dict(q_mode="bsm", q_r=0.8, q_sx=4, q_sy=4)] * 2
    assert resolve_token_merging(ref_style).stages == PRESETS["hq"].stages
    assert resolve_token_merging([dict(q_mode="n2d", q_s=(2, 2))] * 4).stages == PRESETS["2x2"].stages
    path = tmp_path / "fast.yaml"
    path.write_text("stages:\n" + "  - {kv_mode: bsm, kv_ratio: 0.9, kv_stride: 4}\n" * 2
                    + "  - {q_mode: bsm, q_ratio: 0.9, q_stride: [4, 4]}\n" * 2)
    assert resolve_token_merging(path).stages == PRESETS["fast"].stages
    assert resolve_token_merging(str(path)).stages == PRESETS["fast"].stages
    (tmp_path / "name.yaml").write_text("2x2\n")
    assert resolve_token_merging(tmp_path / "name.yaml") is PRESETS["2x2"]


def test_config_round_trip_and_create_model(tmp_path):
    x = torch.randn(1, 3, 128, 128)
    custom = [StageMerging(q_mode="pool", q_stride=(2, 1)), {}, {"kv_mode": "bsm", "kv_ratio": 0.5}, None]
    for strategy in ("fast", custom):
        model = tiny_model()
        model.set_token_merging(strategy)
        rebuilt = SegFormer(SegFormerConfig.from_dict(model.config.to_dict()))
        rebuilt.load_state_dict(model.state_dict())
        assert rebuilt.token_merging.stages == model.token_merging.stages
        with torch.no_grad():
            assert torch.equal(rebuilt.eval()(x), model(x))
    model = create_model("segformer-b0", num_classes=3, token_merging="2x2")
    assert model.config.token_merging == "2x2" and isinstance(model.token_merging, TokenMergingConfig)


@pytest.mark.parametrize("spec,match", [
    ("turbo", "neither a preset nor an existing file"),
    ([{}] * 3, "4 per-stage settings"),
    ([{"q_mode": "bsm", "q_rr": 0.5}, {}, {}, {}], "stage 1: unknown key 'q_rr'"),
    ([{"q_mode": "n1d"}, {}, {}, {}], "q_mode must be one of"),
    ([{"kv_mode": "bsm", "kv_ratio": 1.5}, {}, {}, {}], r"kv_ratio must be in \[0, 1\]"),
    ({"stage": []}, "unknown key"),
    (3, "cannot use 3"),
])
def test_bad_strategies_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_token_merging(spec)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [{q_mode: bsm}, {}, {}, {q_stride: 0}]\n")
    with pytest.raises(ValueError, match=rf"{path}: stage 4: q_stride"):
        resolve_token_merging(path)
