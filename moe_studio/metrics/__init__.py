"""Pure statistics over recorded arrays (numpy only: no Qt, no torch).

The views read raw records from the run store and ask these functions what to draw,
so every number on screen has one definition that the tests check against an
independent computation. Modules: ``routing`` (expert load, gates, routed tokens),
``smoothing`` (the plots' debiased EMA), ``compare`` (x axes and group bands of
compared runs), ``precision`` (number-format headroom).
"""
from .routing import (BAND_PERCENTILES, choice_counts, class_expert_share, dead_expert_counts,
                      dead_expert_mask,
                      dead_experts, domain_expert_share, dropped_fraction, gate_entropy,
                      group_total_variation, histogram_percentiles, load_cv, load_over_uniform,
                      load_share, max_over_mean, share_matrix, token_context, tokens_in_cell,
                      top1_expert, top1_prob, uniform_share)

__all__ = [
    "BAND_PERCENTILES", "choice_counts", "class_expert_share", "dead_expert_counts",
    "dead_expert_mask", "dead_experts", "domain_expert_share", "dropped_fraction", "gate_entropy",
    "group_total_variation", "histogram_percentiles", "load_cv", "load_over_uniform",
    "load_share", "max_over_mean", "share_matrix", "token_context", "tokens_in_cell",
    "top1_expert", "top1_prob", "uniform_share",
]
