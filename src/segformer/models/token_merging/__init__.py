"""SegFormer++ token merging (Kienzle et al., 2024): `spec` parses strategies, `merge` holds the algorithm and
the attention hook."""

from .merge import (
           BipartiteMerge,
           HalfResolution,
           PoolMerge,
           StageTokenMerging,
           apply_token_merging,
           bipartite_soft_matching,
)
from .spec import MODES, PRESETS, StageMerging, TokenMergingConfig, TokenMergingSpec, resolve_token_merging

__all__ = ["StageMerging", "TokenMergingConfig", "PRESETS", "MODES", "TokenMergingSpec", "resolve_token_merging",
           "bipartite_soft_matching", "BipartiteMerge", "PoolMerge", "StageTokenMerging", "apply_token_merging",
           "HalfResolution"]
