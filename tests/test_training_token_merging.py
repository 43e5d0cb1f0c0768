"""Training with SegFormer++ token merging: gradients through merge and un-merge (gradcheck with the matching
frozen), the same parameters trained as without merging, nothing full-size kept for backward that merging removed,
and `segformer train --token-merging` end to end (final/ records it, evaluation and resume use it, pose too)."""

from __future__ import annotations

import json

import pytest
import torch

import segformer
from segformer import cli
from segformer.data.synthetic import write_synthetic
from segformer.data.synthetic_pose import write_synthetic_pose
from segformer.models import SegFormer, SegFormerConfig, mit_config
from segformer.models.mit import EfficientSelfAttention
from segformer.models.token_merging import StageTokenMerging
from segformer.models.token_merging import merge as merge_module
from segformer.training import TrainConfig, train
from segformer.training.trainer import Trainer

QUALITY_ITERS = 60
TINY = {"depths": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 32], "num_heads": [1, 1, 1, 1], "decoder_dim": 16}


def tiny_model(dtype=torch.float32) -> SegFormer:
    encoder = mit_config("b0", embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                         drop_path_rate=0.0)
    torch.manual_seed(0)
    model = SegFormer(SegFormerConfig(encoder=encoder, num_classes=3, decoder_dim=8, decoder_dropout=0.0))
    with torch.no_grad():  # non-trivial norms, so that tokens differ and merging matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.to(dtype)


class FrozenMatching:
    """Replaces `bipartite_soft_matching`: the first forward computes and records every matching, later forwards
    replay them in order, so that the function of the input gradcheck differentiates is fixed."""

    def __init__(self):
        self.recorded, self.calls = [], 0

    def __call__(self, metric, height, width, stride, r):
        if self.calls == len(self.recorded):
            self.recorded.append(REAL_MATCHING(metric, height, width, stride, r))
        self.calls += 1
        return self.recorded[self.calls - 1]

    def next_forward(self) -> None:
        self.calls = 0


REAL_MATCHING = merge_module.bipartite_soft_matching


def directional_derivatives(f, x: torch.Tensor, directions: int = 3, eps: float = 1e-6) -> list[tuple[float, float]]:
    """(autograd, central finite difference) derivatives of the scalar f along random directions at x."""
    x = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(f(x), x)
    out = []
    for _ in range(directions):
        u = torch.randn_like(x)
        with torch.no_grad():
            numeric = (f(x + eps * u) - f(x - eps * u)) / (2 * eps)
        out.append((float((grad * u).sum()), float(numeric)))
    return out


@pytest.mark.parametrize("strategy", ["hq", "2x2"])
def test_gradients_through_merging_match_finite_differences(strategy, monkeypatch):
    """float64, matching frozen: autograd's derivatives along random directions equal central finite differences
    for every stage's merged attention (in its input tokens, and in the weights of the merged sequence's
    projection: kv where keys/values merge, q where queries do) and for the whole model's loss in its input
    (attention is ~0.1% of that gradient, hence the tight tolerance; torch's fast gradcheck missed a detached
    un-merge here, its full one takes a minute)."""
    frozen = FrozenMatching()
    monkeypatch.setattr(merge_module, "bipartite_soft_matching", frozen)
    model = tiny_model(torch.float64).train()
    model.set_token_merging(strategy)
    torch.manual_seed(1)
    for stage, grid in zip(model.encoder.stages, (16, 8, 8, 8), strict=True):  # each holds a full merge cell
        attn = stage.blocks[0].attn
        name = "kv.weight" if attn.token_merging.setting.kv_mode is not None else "q.weight"
        tokens = torch.randn(1, grid * grid, stage.norm.normalized_shape[0], dtype=torch.float64)
        weight = attn.get_parameter(name).detach()
        target = torch.randn_like(tokens)

        def by_tokens(x, attn=attn, grid=grid, target=target):
            frozen.next_forward()
            return (attn(x, grid, grid) * target).sum()

        def by_weight(w, attn=attn, name=name, grid=grid, tokens=tokens, target=target):
            frozen.next_forward()
            return (torch.func.functional_call(attn, {name: w}, (tokens, grid, grid)) * target).sum()

        for f, at in ((by_tokens, tokens), (by_weight, weight)):
            for analytic, numeric in directional_derivatives(f, at):
                assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)
        frozen.recorded.clear()
    pixels = torch.randn(1, 3, 128, 128, dtype=torch.float64)
    target = torch.randn(1, 3, 32, 32, dtype=torch.float64)

    def loss(x):
        frozen.next_forward()
        return (model(x) * target).sum()

    for analytic, numeric in directional_derivatives(loss, pixels):
        assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9)
    assert len(frozen.recorded) == (4 if strategy == "hq" else 0)  # HQ matched kv in stages 1-2, q in 3-4


def test_a_merged_train_step_updates_every_parameter_the_unmerged_step_does():
    x, labels = torch.randn(2, 3, 128, 128), torch.randint(0, 3, (2, 128, 128))
    updated = {}
    for strategy in (None, "hq", "fast", "2x2", "downsample"):
        model = tiny_model().train()
        model.set_token_merging(strategy)
        model.loss(model(x), labels).backward()  # AdamW moves every parameter whose gradient is not zero
        updated[strategy] = {k for k, v in model.named_parameters() if v.grad is not None and v.grad.any()}
    assert len(updated[None]) == len(list(tiny_model().parameters()))
    for strategy, names in updated.items():
        assert names == updated[None], f"{strategy}: no gradient for {sorted(updated[None] - names)}"


def saved_in_attention(model: SegFormer, x: torch.Tensor, monkeypatch) -> dict[int, list[tuple[int, ...]]]:
    """Shapes of the tensors each stage's attention (`attend`: q/kv/out projections and SDPA) keeps for backward."""
    current, saved = [None], {i: [] for i in range(4)}
    stage_of = {id(b.attn): i for i, s in enumerate(model.encoder.stages) for b in s.blocks}
    attend = EfficientSelfAttention.attend

    def traced(self, xq, xkv):
        current[0] = stage_of[id(self)]
        try:
            return attend(self, xq, xkv)
        finally:
            current[0] = None

    def pack(t):
        if current[0] is not None:
            saved[current[0]].append(tuple(t.shape))
        return t

    monkeypatch.setattr(EfficientSelfAttention, "attend", traced)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return saved


def test_merged_training_keeps_only_merged_size_attention_tensors(monkeypatch):
    """No (N x M) attention matrix is kept for backward (SDPA's fused kernel keeps q, k, v, out and the log-sum-exp);
    with merging, what attention keeps is at the merged sizes: HQ's k/v of stages 1-2 hold the M - int(0.6 M)
    merged tokens, its q-merged stages 3-4 keep q and the output at N - int(0.8 N) tokens, not at N."""
    x = torch.randn(1, 3, 256, 320)
    model = tiny_model().train()
    full = saved_in_attention(model, x, monkeypatch)
    model.set_token_merging("hq")
    merged = saved_in_attention(model, x, monkeypatch)
    for stage in range(4):
        n = (256 // 4 >> stage) * (320 // 4 >> stage)
        m = n // model.encoder.config.sr_ratios[stage] ** 2
        tokens = {s[-2] for s in full[stage] if len(s) == 4}  # (B, heads, tokens, head dim): q, k, v, out
        assert tokens == {n, m} and all(max(s, default=0) <= n for s in full[stage])  # no N x M matrix
        kept = {s[-2] for s in merged[stage] if len(s) == 4}
        assert kept == ({n, m - int(m * 0.6)} if stage < 2 else {n - int(n * 0.8), m})
        elements = [torch.Size(s).numel() for s in merged[stage]]
        assert sum(elements) < sum(torch.Size(s).numel() for s in full[stage])


# ---------------------------------------------------------------------------------------------------------------
# The trainer and the CLI


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """6 classes at 96-128 px: at a 128 crop every stage's token grid holds HQ's merge cells."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "data", num_train=4, num_val=2, min_size=96,
                           max_size=128)


def count_merging_calls(monkeypatch) -> dict[bool, int]:
    """Calls of the merging hook, by the attention layer's training flag."""
    calls = {True: 0, False: 0}
    forward = StageTokenMerging.forward

    def counted(self, attn, *args):
        calls[attn.training] += 1
        return forward(self, attn, *args)

    monkeypatch.setattr(StageTokenMerging, "forward", counted)
    return calls


def test_cli_trains_with_merging_records_it_and_resume_keeps_it(synth, tmp_path, monkeypatch, capsys):
    calls = count_merging_calls(monkeypatch)
    run = tmp_path / "run"
    args = ["train", "--data", str(synth), "--out", str(run), "--batch-size", "2", "--crop", "128",
            "--token-merging", "hq", "--set", "num_workers=0", "--set", "progress=false", "--set", "eval_interval=0",
            "--set", f"model_args={json.dumps(TINY)}", "--set", "warmup_iters=0"]
    with pytest.warns(UserWarning, match="transformers knows no token merging"):  # final/ in the HF layout
        assert cli.main([*args, "--iters", "2"]) == 0
    assert calls[True] == 2 * 4 and calls[False] > 0  # 4 blocks merge in every training step and in evaluation
    assert segformer.load_model(run / "final").token_merging.name == "hq"
    assert "token_merging: hq" in (run / "config.yaml").read_text()
    calls[True] = 0
    with pytest.warns(UserWarning, match="transformers knows no token merging"):
        assert cli.main([*args, "--iters", "3", "--resume"]) == 0  # one more step, resumed from iteration 2
    assert calls[True] == 4
    model = segformer.load_model(run / "final")
    assert model.token_merging.name == "hq"
    metrics = json.loads((run / "metrics.json").read_text())
    again = segformer.evaluation.evaluate(model, segformer.data.datasets.open_dataset(synth, "val"),
                                          scale=(512, 128), progress=False)
    assert again["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-9)  # the recorded score is the merged model's
    capsys.readouterr()
    with pytest.raises(ValueError, match="model_args.token_merging"):
        TrainConfig(model_args={"token_merging": "hq"})
    assert cli.main([*args, "--iters", "2", "--overwrite", "--token-merging", "hqq"]) == 2
    assert "'hqq' is neither a preset nor an existing file" in capsys.readouterr().err


def test_a_strategy_file_is_stored_in_the_run_and_setr_refuses(synth, tmp_path):
    strategy = tmp_path / "kv.yaml"
    strategy.write_text("stages:\n  - {kv_mode: bsm, kv_r: 0.5, kv_sx: 2, kv_sy: 2}\n  - {}\n  - {}\n  - {}\n")
    config = TrainConfig(model="segformer-b0", model_args=dict(TINY), data=str(synth), crop_size=(128, 128),
                         batch_size=2, iters=1, eval_interval=0, num_workers=0, progress=False,
                         token_merging=str(strategy), out=str(tmp_path / "run"))
    strategy.unlink()  # the config holds the strategy itself, not the file's name
    trainer = Trainer(config)
    assert trainer.core.token_merging.stages[0].kv_ratio == 0.5 and trainer.core.token_merging.name is None
    setr = TrainConfig(model="setr-naive", data=str(synth), token_merging="hq", out=str(tmp_path / "setr"),
                       model_args={"img_size": [32, 32], "depth": 4, "embed_dim": 32, "num_heads": 2, "channels": 16},
                       num_workers=0, progress=False)
    with pytest.raises(ValueError, match="a SETR has no token merging"):
        Trainer(setr)


def test_pose_trains_with_merging(tmp_path):
    data = write_synthetic_pose(tmp_path / "data", num_train=4, num_val=2)
    config = TrainConfig(model="segformer-b0-pose", model_args=dict(TINY), data=str(data), crop_size=(128, 96),
                         batch_size=2, iters=1, eval_interval=0, num_workers=0, progress=False, token_merging="2x2",
                         out=str(tmp_path / "run"))
    metrics = train(config)
    assert "PCK@0.1" in metrics
    assert segformer.load_model(tmp_path / "run" / "final").token_merging.name == "2x2"


def test_a_tiny_model_trained_with_hq_scores_close_to_the_unmerged_run(tmp_path):
    """The cheap twin of benchmarks/train_token_merging_quality.py (B0, 300 steps: within 3 points): a tiny model,
    same seed and budget with and without HQ merging, lands within a looser floor of the unmerged run."""
    data = write_synthetic(tmp_path / "data", num_train=48, num_val=8, min_size=128, max_size=128)
    scores = {}
    for strategy in (None, "hq"):
        config = TrainConfig(model="segformer-b0", model_args={**TINY, "drop_path_rate": 0.0, "decoder_dropout": 0.0},
                             data=str(data), crop_size=(128, 128), scale=(128, 128), ratio_range=(1.0, 1.0),
                             photometric=False, batch_size=8, iters=QUALITY_ITERS, lr=3e-3, warmup_iters=5,
                             eval_interval=0, num_workers=0, progress=False, token_merging=strategy,
                             out=str(tmp_path / f"run_{strategy}"))
        scores[strategy] = train(config)["mIoU"]
    print(scores)
    assert scores[None] > 20 and abs(scores[None] - scores["hq"]) <= 8
