"""Tiny random-weight Hugging Face MoE models of every supported family, saved to a
folder with a tokenizer trained on the spot: what the inspection tests and
``moe-studio bench inspect`` load, with no network.

Each model has hidden size 32, 4 routed experts and 2 MoE layers unless the caller asks
for more (DeepSeek, GLM-4-MoE, dots.llm1 and LFM2-MoE add a dense first layer, as the
real models keep theirs dense, as do GLM-4-MoE-Lite and GLM-4.5V, most of batch A (the
DeepSeek-V3-like ones, EXAONE-MoE, AFMoE, HY-V3, Beam, Ergo, ERNIE-4.5-VL-MoE) and several
of batch B (Kimi Linear, Kimi K2.5, MiniCPM5-MoE, MiMo-V2-Flash, Laguna, Kolibri-1.1,
Step 3.7, Unlimited-OCR, Mistral Large 4, Inkling); Nemotron-H has 4 blocks, Mamba, MoE,
attention, MoE; the image-text Llama 4 has 4 layers, every other one MoE, as Llama 4
Maverick; DeepSeek-V4's first MoE layer is hash-routed). The image-text families (Llama 4,
Qwen3.5-MoE, Qwen3-VL-MoE, GLM-4.5V, Gemma 4, GLM-5-Next, HY-V4-VL, dots3.note,
DeepSeek-OCR-2, Aria, ERNIE-4.5-VL-MoE, Qwen4-Exp, Kimi K2.5, MiniMax-M3-VL, Step 3.7,
Muse Spark, Inkling 2, Unlimited-OCR, Mistral Large 4, Qwen3-Omni-MoE) are saved whole,
with a one-layer vision tower, as their released checkpoints are. A router whose weights
start at zero, or a hash router's empty table, is drawn at random
(``_randomise_zero_routers``), so that tokens do not all tie.
"""
from __future__ import annotations

from pathlib import Path

VOCAB = 300
HIDDEN = 32
EXPERTS = 4

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
               bos_token_id=1, eos_token_id=2)

# Llama 4's text model: top-1 of 4 experts plus the shared expert, every layer MoE (Scout)
_LLAMA4 = dict(intermediate_size=32, intermediate_size_mlp=64, head_dim=8,
               num_local_experts=EXPERTS, num_experts_per_tok=1)

# Qwen3.5-MoE's text model: gated-delta-net and full attention layers, a shared expert
_QWEN35 = dict(_COMMON, head_dim=8, moe_intermediate_size=32, shared_expert_intermediate_size=32,
               num_experts=EXPERTS, num_experts_per_tok=2, linear_key_head_dim=8,
               linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
               layer_types=["linear_attention", "full_attention"])
_QWEN_VISION = dict(depth=1, hidden_size=HIDDEN, intermediate_size=32, num_heads=4,
                    out_hidden_size=HIDDEN, patch_size=14, temporal_patch_size=2,
                    spatial_merge_size=2)

# DeepSeek-V3's layout (multi-head latent attention, a dense first layer, sigmoid experts
# chosen within the best of 2 groups), which the batch-A families below build on
_DSV3_LIKE = dict(_COMMON, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=64,
                  moe_intermediate_size=32, n_routed_experts=EXPERTS, n_shared_experts=1,
                  num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16,
                  q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
                  n_group=2, topk_group=1)

# the image, video and their start/end token ids of GLM's vision-language models
_VL_TOKENS = dict(image_token_id=VOCAB - 1, video_token_id=VOCAB - 2, image_start_token_id=VOCAB - 3,
                  image_end_token_id=VOCAB - 4, video_start_token_id=VOCAB - 5,
                  video_end_token_id=VOCAB - 6)

# DeepSeek-V3 (also Kimi K2.5's text model): a dense first layer, group-limited choice
_DSV3 = dict(_COMMON, num_key_value_heads=4, intermediate_size=64, moe_intermediate_size=32,
             n_routed_experts=EXPERTS, n_shared_experts=1, num_experts_per_tok=2,
             first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
             qk_nope_head_dim=8, v_head_dim=8, n_group=2, topk_group=1, routed_scaling_factor=2.5)

# Qwen4-Exp's text model (as Qwen3.5-MoE's)
_QWEN4 = dict(_COMMON, head_dim=8, moe_intermediate_size=32, shared_expert_intermediate_size=32,
              num_experts=EXPERTS, num_experts_per_tok=2, linear_key_head_dim=8,
              linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
              hc_lowrank=8)

# Inkling's text model: routed experts plus two shared ones weighted by the same gate
_INKLING = dict(_COMMON, num_hidden_layers=3, head_dim=8, swa_num_attention_heads=4,
                swa_num_key_value_heads=2, swa_head_dim=8, sliding_window_size=16,
                intermediate_size=64, moe_intermediate_size=32, n_routed_experts=EXPERTS,
                n_shared_experts=2, num_experts_per_tok=2,
                mlp_layer_types=["dense", "sparse", "sparse"])

# image-text family -> the class its released checkpoints are saved from
IMAGE_TEXT = {"llama4": "Llama4ForConditionalGeneration",
              # batch A
              "glm5_next": "Glm5NextForConditionalGeneration",
              "hy_v4_vl": "HYV4VLForConditionalGeneration",
              "dots3_note": "Dots3NoteForConditionalGeneration",
              "deepseek_ocr2": "DeepseekOcr2ForConditionalGeneration",
              "aria": "AriaForConditionalGeneration",
              "gemma4": "Gemma4ForConditionalGeneration",
              "ernie4_5_vl_moe": "Ernie4_5_VLMoeForConditionalGeneration",
              # (batch A ends)
              "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
              "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
              "glm4v_moe": "Glm4vMoeForConditionalGeneration",
              # batch B
              "qwen4_exp": "Qwen4ExpForConditionalGeneration",
              "kimi_k25": "Kimi_K25ForConditionalGeneration",
              "minimax_m3_vl": "MiniMaxM3SparseForConditionalGeneration",
              "step3p7": "Step3p7ForConditionalGeneration",
              "muse_spark": "MuseSparkForConditionalGeneration",
              "inkling2": "Inkling2ForConditionalGeneration",
              "unlimited_ocr": "UnlimitedOcrForConditionalGeneration",
              "mistral_large4": "MistralLarge4ForConditionalGeneration",
              "qwen3_omni_moe": "Qwen3OmniMoeForConditionalGeneration"}

# family -> (transformers config class name, its keyword arguments)
FAMILIES: dict[str, tuple[str, dict]] = {
    "mixtral": ("MixtralConfig", dict(_COMMON, intermediate_size=64, num_local_experts=EXPERTS,
                                      num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(_COMMON, intermediate_size=64, moe_intermediate_size=32,
                                         shared_expert_intermediate_size=32, num_experts=EXPERTS,
                                         num_experts_per_tok=2, decoder_sparse_step=1)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(_COMMON, intermediate_size=64, moe_intermediate_size=32,
                                         num_experts=EXPERTS, num_experts_per_tok=2, head_dim=8,
                                         decoder_sparse_step=1, norm_topk_prob=True)),
    "olmoe": ("OlmoeConfig", dict(_COMMON, intermediate_size=32, num_experts=EXPERTS,
                                  num_experts_per_tok=2)),
    "deepseek_v2": ("DeepseekV2Config", dict(_COMMON, num_key_value_heads=4, intermediate_size=64,
                                             moe_intermediate_size=32,
                                             n_routed_experts=EXPERTS, n_shared_experts=1,
                                             num_experts_per_tok=2, first_k_dense_replace=1,
                                             kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
                                             qk_nope_head_dim=8, v_head_dim=8, n_group=2,
                                             topk_group=1, topk_method="group_limited_greedy",
                                             routed_scaling_factor=1.0)),
    "deepseek_v3": ("DeepseekV3Config", _DSV3),
    "gpt_oss": ("GptOssConfig", dict(_COMMON, intermediate_size=32, num_local_experts=EXPERTS,
                                     num_experts_per_tok=2, head_dim=8, sliding_window=16,
                                     layer_types=["sliding_attention", "full_attention"])),
    "qwen3_next": ("Qwen3NextConfig", dict(_COMMON, intermediate_size=64, moe_intermediate_size=32,
                                           shared_expert_intermediate_size=32, num_experts=EXPERTS,
                                           num_experts_per_tok=2, head_dim=8, linear_key_head_dim=8,
                                           linear_value_head_dim=8, linear_num_key_heads=2,
                                           linear_num_value_heads=4, decoder_sparse_step=1,
                                           layer_types=["linear_attention", "full_attention"])),
    "glm4_moe": ("Glm4MoeConfig", dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                                       moe_intermediate_size=32, n_routed_experts=EXPERTS,
                                       n_shared_experts=1, num_experts_per_tok=2,
                                       first_k_dense_replace=1, n_group=1, topk_group=1, head_dim=8)),
    "granitemoe": ("GraniteMoeConfig", dict(_COMMON, intermediate_size=32, num_local_experts=EXPERTS,
                                            num_experts_per_tok=2)),
    "phimoe": ("PhimoeConfig", dict(_COMMON, intermediate_size=32, num_local_experts=EXPERTS,
                                    num_experts_per_tok=2)),
    "ernie4_5_moe": ("Ernie4_5_MoeConfig", dict(_COMMON, intermediate_size=64, moe_intermediate_size=32,
                                                moe_num_experts=EXPERTS, moe_k=2,
                                                moe_num_shared_experts=1, moe_layer_start_index=0,
                                                moe_layer_end_index=1, moe_layer_interval=1)),
    "flex_olmo": ("FlexOlmoConfig", dict(_COMMON, intermediate_size=32, num_experts=EXPERTS,
                                         num_experts_per_tok=2)),
    "dots1": ("Dots1Config", dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                                  moe_intermediate_size=32, n_routed_experts=EXPERTS,
                                  n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1)),
    "jamba": ("JambaConfig", dict(_COMMON, intermediate_size=32, num_experts=EXPERTS,
                                  num_experts_per_tok=2, expert_layer_period=1, expert_layer_offset=0,
                                  attn_layer_period=2, attn_layer_offset=1, mamba_d_state=4,
                                  mamba_d_conv=2, mamba_expand=2, use_mamba_kernels=False)),
    "minimax": ("MiniMaxConfig", dict(_COMMON, intermediate_size=32, num_local_experts=EXPERTS,
                                      num_experts_per_tok=2, head_dim=8,
                                      layer_types=["linear_attention", "full_attention"])),
    "lfm2_moe": ("Lfm2MoeConfig", dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                                       moe_intermediate_size=32, num_experts=EXPERTS,
                                       num_experts_per_tok=2, num_dense_layers=1,
                                       layer_types=["conv", "full_attention", "conv"])),
    # (clip_qkv: this transformers' DBRX attention cannot run without it; DBRX sets 8)
    "dbrx": ("DbrxConfig", dict(vocab_size=VOCAB, d_model=HIDDEN, n_heads=4, n_layers=2,
                                max_seq_len=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                                ffn_config=dict(ffn_hidden_size=32, moe_num_experts=EXPERTS,
                                                moe_top_k=2))),
    # batch A
    # (DeepSeek-V3.2, GLM-MoE-DSA and HY-V4 route attention through a lightning indexer:
    # index_topk at least the sequence, so every position is attended, as in the real models
    # for short text)
    "deepseek_v32": ("DeepseekV32Config", dict(_DSV3_LIKE, index_topk=64, index_head_dim=16,
                                               index_n_heads=2, head_dim=16)),
    "glm_moe_dsa": ("GlmMoeDsaConfig", dict(_DSV3_LIKE, index_topk=64, index_head_dim=16,
                                            index_n_heads=2, head_dim=16)),
    "exaone_moe": ("ExaoneMoeConfig", dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                                           moe_intermediate_size=32, num_experts=EXPERTS,
                                           num_experts_per_tok=2, head_dim=8, n_group=2,
                                           topk_group=1, sliding_window=16)),
    "afmoe": ("AfmoeConfig", dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                                  moe_intermediate_size=32, num_experts=EXPERTS,
                                  num_experts_per_tok=2, num_shared_experts=1, head_dim=8,
                                  sliding_window=16, global_attn_every_n_layers=2)),
    "hy_v3": ("HYV3Config", dict(_COMMON, num_hidden_layers=3, intermediate_size=64, head_dim=8,
                                 moe_intermediate_size=32, num_experts=EXPERTS,
                                 num_experts_per_tok=2)),
    "granitemoe_swa": ("GraniteMoeSWAConfig", dict(_COMMON, intermediate_size=32,
                                                   num_local_experts=EXPERTS, num_experts_per_tok=2,
                                                   sliding_window=16)),
    "bailing_hybrid": ("BailingHybridConfig", dict(_DSV3_LIKE, num_local_experts=EXPERTS,
                                                   head_dim=16, layer_group_size=2)),
    "axk1": ("AXK1Config", dict(_DSV3_LIKE)),
    "axk2": ("AXK2Config", dict(_DSV3_LIKE, index_topk=64, index_head_dim=16, index_n_heads=2,
                                head_dim=16, gated_norm_rank=4)),
    "beam": ("BeamConfig", dict(_COMMON, num_hidden_layers=3, intermediate_size=64, head_dim=8,
                                moe_intermediate_size=32, num_experts=EXPERTS,
                                num_experts_per_tok=2, n_group=2, topk_group=1, sliding_window=16,
                                mlp_layer_types=["dense", "sparse", "sparse"])),
    "ergo": ("ErgoConfig", dict(_COMMON, num_hidden_layers=3, first_dense_intermediate_size=64,
                                moe_intermediate_size=32, shared_intermediate_size=32,
                                num_experts=EXPERTS, num_experts_per_tok=2, head_dim=8,
                                sliding_window=16, global_attention_every_n_layers=2)),
    "hy_v4": ("HYV4Config", dict(_DSV3_LIKE, index_topk=64, index_head_dim=16, index_n_heads=2,
                                 head_dim=16)),
    "glm5_next": ("Glm5NextConfig", dict(
        text_config=dict(_DSV3_LIKE, index_topk=64, index_head_dim=16, index_n_heads=2,
                         head_dim=16, qk_rope_head_dim=0, qk_nope_head_dim=16,
                         linear_head_dim=8, linear_num_heads=4, index_kpool=4,
                         mlp_layer_types=["dense", "sparse", "sparse"]),
        vision_config=dict(depth=1, hidden_size=HIDDEN, intermediate_size=32, num_heads=4,
                           out_hidden_size=HIDDEN, image_size=28, projection_intermediate_size=32),
        **_VL_TOKENS)),
    "hy_v4_vl": ("HYV4VLConfig", dict(
        text_config=dict(_DSV3_LIKE, index_topk=64, index_head_dim=16, index_n_heads=2,
                         head_dim=16, rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                           mrope_section=[2, 1, 1])),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_attention_heads=4,
                           num_hidden_layers=1, out_hidden_size=HIDDEN, patch_size=14,
                           max_image_size=56),
        image_token_id=VOCAB - 1, video_token_id=VOCAB - 2)),
    "dots3_note": ("Dots3NoteConfig", dict(
        text_config=dict(_DSV3_LIKE, index_topk=64, index_head_dim=16, index_n_heads=2,
                         head_dim=16, shared_experts_intermediate_size=32, sliding_window=16,
                         swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_q_lora_rank=16,
                         swa_kv_lora_rank=16, swa_head_dim=16, swa_qk_nope_head_dim=8,
                         swa_v_head_dim=8),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, pyramid_num_routed=[-1], adapter_in_dim=HIDDEN,
                           adapter_out_dim=HIDDEN),
        audio_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=4, downsample_hidden_size=16,
                          adapter_input_size=HIDDEN, adapter_out_dim=HIDDEN),
        image_token_id=VOCAB - 1, video_token_id=VOCAB - 2, audio_token_id=VOCAB - 3)),
    "deepseek_ocr2": ("DeepseekOcr2Config", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=32,
                         n_routed_experts=EXPERTS, n_shared_experts=1, num_experts_per_tok=2,
                         mlp_layer_types=["dense", "sparse", "sparse"]),
        vision_config=dict(
            sam_config=dict(hidden_size=HIDDEN, output_channels=16, num_hidden_layers=1,
                            num_attention_heads=4, image_size=64, patch_size=16, window_size=2,
                            global_attn_indexes=(0,), downsample_channels=[16, HIDDEN]),
            encoder_config=dict(_COMMON, intermediate_size=32, num_hidden_layers=1)),
        image_token_id=VOCAB - 1)),
    "aria": ("AriaConfig", dict(
        text_config=dict(_COMMON, intermediate_size=32, moe_num_experts=EXPERTS, moe_topk=2,
                         moe_num_shared_experts=1),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, image_size=28, patch_size=14),
        projector_patch_to_query_dict={4: 4}, image_token_index=VOCAB - 1)),
    "gemma4": ("Gemma4Config", dict(
        text_config=dict(_COMMON, intermediate_size=64, head_dim=8, enable_moe_block=True,
                         num_experts=EXPERTS, top_k_experts=2, moe_intermediate_size=32,
                         hidden_size_per_layer_input=8, vocab_size_per_layer_input=VOCAB,
                         sliding_window=16, layer_types=["sliding_attention", "full_attention"]),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=4, head_dim=8,
                           position_embedding_size=64),
        audio_config=None, boi_token_id=VOCAB - 1, eoi_token_id=VOCAB - 2,
        image_token_id=VOCAB - 3, video_token_id=VOCAB - 4, boa_token_id=VOCAB - 5,
        eoa_token_index=VOCAB - 6, audio_token_id=VOCAB - 7)),
    "ernie4_5_vl_moe": ("Ernie4_5_VLMoeConfig", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                         moe_intermediate_size=[32, 32],
                         moe_k=2, moe_num_experts=EXPERTS, moe_num_shared_experts=1,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                              mrope_section=[1, 1, 2])),
        vision_config=dict(depth=1, hidden_size=HIDDEN, num_heads=4, intermediate_size=32),
        **_VL_TOKENS)),
    "cohere2_moe": ("Cohere2MoeConfig", dict(_COMMON, intermediate_size=32, head_dim=8,
                                             num_experts=EXPERTS, num_experts_per_tok=2,
                                             sliding_window=16)),
    # DeepSeek-V4: a hash-routed MoE layer (a fixed token -> experts table) then a learned one
    "deepseek_v4": ("DeepseekV4Config", dict(
        _COMMON, num_key_value_heads=1, head_dim=16, q_lora_rank=16, o_groups=2, o_lora_rank=16,
        moe_intermediate_size=32, n_routed_experts=EXPERTS, num_experts_per_tok=2,
        index_n_heads=2, index_head_dim=16, index_topk=64, hc_mult=2, hc_sinkhorn_iters=3,
        sliding_window=16, mlp_layer_types=["hash_moe", "moe"],
        layer_types=["sliding_attention", "compressed_sparse_attention"])),
    "flint": ("FlintConfig", dict(_COMMON, intermediate_size=64, moe_intermediate_size=32,
                                  shared_expert_intermediate_size=32, num_experts=EXPERTS,
                                  num_experts_per_tok=2, head_dim=8, sliding_window=16,
                                  mlp_only_layers=[])),
    "llama4_text": ("Llama4TextConfig", dict(_COMMON, **_LLAMA4)),
    "llama4": ("Llama4Config", dict(
        text_config=dict(_COMMON, **_LLAMA4, num_hidden_layers=4, interleave_moe_layer_step=2),
        vision_config=dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=32, image_size=28, patch_size=14,
                           vision_output_dim=HIDDEN, projector_input_dim=HIDDEN,
                           projector_output_dim=HIDDEN),
        boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2, image_token_index=VOCAB - 1)),
    "granitemoeshared": ("GraniteMoeSharedConfig", dict(_COMMON, intermediate_size=32,
                                                        shared_intermediate_size=32,
                                                        num_local_experts=EXPERTS,
                                                        num_experts_per_tok=2)),
    "jetmoe": ("JetMoeConfig", dict(_COMMON, intermediate_size=32, kv_channels=8,
                                    num_local_experts=EXPERTS, num_experts_per_tok=2)),
    "granitemoehybrid": ("GraniteMoeHybridConfig", dict(
        _COMMON, intermediate_size=32, shared_intermediate_size=32, num_local_experts=EXPERTS,
        num_experts_per_tok=2, layer_types=["mamba", "attention"], mamba_n_heads=4,
        mamba_d_state=8, mamba_d_head=16, mamba_chunk_size=16, mamba_d_conv=2)),
    "glm4_moe_lite": ("Glm4MoeLiteConfig", dict(_COMMON, num_hidden_layers=3, num_key_value_heads=4,
                                                intermediate_size=64, moe_intermediate_size=32,
                                                n_routed_experts=EXPERTS, n_shared_experts=1,
                                                num_experts_per_tok=2, kv_lora_rank=16,
                                                q_lora_rank=None, qk_rope_head_dim=8,
                                                qk_nope_head_dim=8, v_head_dim=8,
                                                mlp_layer_types=["dense", "sparse", "sparse"])),
    "glm4v_moe": ("Glm4vMoeConfig", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, head_dim=16, intermediate_size=64,
                         moe_intermediate_size=32, n_routed_experts=EXPERTS, n_shared_experts=1,
                         num_experts_per_tok=2, first_k_dense_replace=1,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                              mrope_section=[2, 1, 1], partial_rotary_factor=0.5)),
        vision_config=dict(depth=1, hidden_size=HIDDEN, intermediate_size=32, num_heads=4,
                           out_hidden_size=HIDDEN, image_size=28),
        image_token_id=VOCAB - 1, video_token_id=VOCAB - 2, image_start_token_id=VOCAB - 3,
        image_end_token_id=VOCAB - 4, video_start_token_id=VOCAB - 5, video_end_token_id=VOCAB - 6)),
    "hunyuan_v1_moe": ("HunYuanMoEV1Config", dict(_COMMON, intermediate_size=32, head_dim=8,
                                                  num_experts=EXPERTS, moe_topk=2)),
    "qwen3_5_moe": ("Qwen3_5MoeConfig", dict(text_config=_QWEN35, vision_config=_QWEN_VISION)),
    "qwen3_5_moe_text": ("Qwen3_5MoeTextConfig", _QWEN35),
    "qwen3_vl_moe": ("Qwen3VLMoeConfig", dict(
        text_config=dict(_COMMON, head_dim=8, intermediate_size=64, moe_intermediate_size=32,
                         num_experts=EXPERTS, num_experts_per_tok=2, decoder_sparse_step=1,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                              mrope_section=[2, 1, 1])),
        vision_config=dict(_QWEN_VISION, deepstack_visual_indexes=[0]))),
    "switch_transformers": ("SwitchTransformersConfig", dict(
        vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, num_experts=EXPERTS, expert_capacity=64, encoder_sparse_step=1,
        decoder_sparse_step=1, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)),
    # batch B
    "kimi_linear": ("KimiLinearConfig", dict(
        _COMMON, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=64,
        moe_intermediate_size=32, num_local_experts=EXPERTS, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=1, kv_lora_rank=16, q_lora_rank=None,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, linear_head_dim=8,
        linear_num_heads=4, layer_types=["linear_attention", "full_attention", "linear_attention"],
        mlp_layer_types=["dense", "sparse", "sparse"])),
    "minimax_m2": ("MiniMaxM2Config", dict(_COMMON, intermediate_size=32, head_dim=8,
                                          num_local_experts=EXPERTS, num_experts_per_tok=2)),
    "nemotron_h": ("NemotronHConfig", dict(
        _COMMON, num_hidden_layers=4, head_dim=8, intermediate_size=64, n_routed_experts=EXPERTS,
        num_experts_per_tok=2, moe_intermediate_size=32, moe_shared_expert_intermediate_size=32,
        layer_types=["linear_attention", "moe", "full_attention", "moe"], use_mamba_kernels=False,
        ssm_state_size=8, mamba_num_heads=4, mamba_head_dim=16, n_groups=2, chunk_size=16)),
    "longcat_flash": ("LongcatFlashConfig", dict(
        {k: v for k, v in _COMMON.items() if k != "num_hidden_layers"}, num_layers=2,
        num_key_value_heads=4, ffn_hidden_size=64, expert_ffn_hidden_size=32,
        n_routed_experts=EXPERTS - 2, zero_expert_num=2, moe_topk=2, kv_lora_rank=16, q_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, head_dim=8, v_head_dim=8)),
    "minicpm5_moe": ("MiniCPM5MoeConfig", dict(
        _COMMON, num_hidden_layers=3, head_dim=8, intermediate_size=64, moe_intermediate_size=32,
        n_routed_experts=EXPERTS, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
        topk_group=1, mlp_layer_types=["dense", "sparse", "sparse"])),
    "mimo_v2_flash": ("MiMoV2FlashConfig", dict(
        _COMMON, num_hidden_layers=3, head_dim=8, v_head_dim=8, intermediate_size=64,
        moe_intermediate_size=32, n_routed_experts=EXPERTS, num_experts_per_tok=2,
        sliding_window=16)),
    "solar_open": ("SolarOpenConfig", dict(_COMMON, head_dim=8, moe_intermediate_size=32,
                                          n_routed_experts=EXPERTS, n_shared_experts=1,
                                          num_experts_per_tok=2)),
    "laguna": ("LagunaConfig", dict(_COMMON, num_hidden_layers=3, head_dim=8, intermediate_size=64,
                                    moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                    num_experts=EXPERTS, num_experts_per_tok=2, sliding_window=16,
                                    moe_router_logit_softcapping=2.0)),
    "lara_mini": ("LaraMiniConfig", dict(
        _COMMON, head_dim=8, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        num_experts=EXPERTS, num_experts_per_tok=2, linear_key_head_dim=8,
        linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
        sliding_window=16)),
    "mellum": ("MellumConfig", dict(_COMMON, head_dim=8, intermediate_size=64, moe_intermediate_size=32,
                                    num_experts=EXPERTS, num_experts_per_tok=2, sliding_window=16)),
    "kolibri1": ("Kolibri1Config", dict(_COMMON, head_dim=8, moe_intermediate_size=32,
                                        shared_expert_intermediate_size=32, num_experts=EXPERTS,
                                        num_experts_per_tok=2, sliding_window=16)),
    # (head_dim 16: its NVFP4 key rounding needs a multiple of 16; a dense first layer as
    # the released model's first two)
    "kolibri1_1": ("Kolibri1_1Config", dict(
        _COMMON, num_hidden_layers=3, head_dim=16, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=EXPERTS, num_experts_per_tok=2,
        sliding_window=16, index_num_heads=2, mlp_only_layers=[0], mlp_only_intermediate_size=64)),
    "qwen4_exp": ("Qwen4ExpConfig", dict(text_config=_QWEN4, vision_config=_QWEN_VISION)),
    "qwen4_exp_text": ("Qwen4ExpTextConfig", _QWEN4),
    "mistral4": ("Mistral4Config", dict(
        _COMMON, num_key_value_heads=4, intermediate_size=64, moe_intermediate_size=32,
        n_routed_experts=EXPERTS, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
        topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=8)),
    "kimi_k25": ("Kimi_K25Config", dict(
        # (q_lora_rank as the released model's: with none, this transformers saves the text
        # q_proj under the vision tower's fused-qkv name and cannot read it back)
        text_config=dict(_DSV3, num_hidden_layers=3, q_lora_rank=16, model_type="deepseek_v3"),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, pos_emb_height=4, pos_emb_width=4),
        projection_hidden_size=HIDDEN, image_token_id=VOCAB - 1, video_token_id=VOCAB - 2,
        vision_start_token_id=VOCAB - 3, vision_end_token_id=VOCAB - 4)),
    "minimax_m3_vl": ("MiniMaxM3VLConfig", dict(
        text_config=dict(_COMMON, intermediate_size=32, head_dim=8, num_local_experts=EXPERTS,
                         num_experts_per_tok=2, dense_intermediate_size=64,
                         shared_intermediate_size=32, rotary_dim=8, index_head_dim=8,
                         index_n_heads=2, index_block_size=8),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, image_size=28),
        projector_hidden_size=HIDDEN, image_token_index=VOCAB - 1, video_token_index=VOCAB - 2)),
    "step3p7": ("Step3p7Config", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, head_dim=8, intermediate_size=64,
                         moe_intermediate_size=32, num_local_experts=EXPERTS,
                         n_routed_experts=EXPERTS, num_experts_per_tok=2, share_expert_dim=32,
                         sliding_window=16, mlp_layer_types=["dense", "sparse", "sparse"]),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, image_size=28))),
    "muse_spark": ("MuseSparkConfig", dict(
        text_config=dict(_COMMON, head_dim=8, intermediate_size=64, moe_intermediate_size=32,
                         moe_hidden_size=32, num_local_experts=EXPERTS, num_experts_per_tok=2,
                         sliding_window=16),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, pos_emb_height=4, pos_emb_width=4),
        audio_config=dict(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], out_hidden_size=HIDDEN),
        out_hidden_size=HIDDEN, projector_hidden_size=HIDDEN)),
    "inkling2": ("Inkling2Config", dict(
        text_config=dict(_COMMON, unpadded_vocab_size=VOCAB, head_dim=8, swa_num_attention_heads=4,
                         swa_num_key_value_heads=2, swa_head_dim=8, sliding_window_size=16,
                         moe_intermediate_size=32, n_routed_experts=EXPERTS,
                         num_experts_per_tok=2),
        vision_config=dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4,
                           patch_size=14, projection_hidden_dim=HIDDEN, text_hidden_size=HIDDEN))),
    "unlimited_ocr": ("UnlimitedOcrConfig", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, intermediate_size=64,
                         moe_intermediate_size=32, n_routed_experts=EXPERTS, n_shared_experts=1,
                         num_experts_per_tok=2, n_group=2, topk_group=1,
                         topk_method="group_limited_greedy"),
        vision_config=dict(
            sam_config=dict(hidden_size=HIDDEN, output_channels=16, num_hidden_layers=1,
                            num_attention_heads=4, image_size=64, global_attn_indexes=[0],
                            mlp_dim=32, downsample_channels=[16, 32]),
            encoder_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=4)))),
    "mistral_large4": ("MistralLarge4Config", dict(
        text_config=dict(_COMMON, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=64,
                         moe_intermediate_size=32, n_routed_experts=EXPERTS, n_shared_experts=1,
                         num_experts_per_tok=2, n_group=2, topk_group=1, kv_lora_rank=16,
                         qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, head_dim=16,
                         index_head_dim=8, index_n_heads=2, index_topk=16),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=4, image_size=28, patch_size=14),
        image_token_index=VOCAB - 1)),
    "inkling_text": ("InklingTextConfig", _INKLING),
    # (as the Thinking checkpoint: the thinker alone, no talker speaking its answers)
    "qwen3_omni_moe": ("Qwen3OmniMoeConfig", dict(
        enable_audio_output=False,
        thinker_config=dict(
            text_config=dict(_COMMON, head_dim=8, intermediate_size=64, moe_intermediate_size=32,
                             num_experts=EXPERTS, num_experts_per_tok=2,
                             rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                  mrope_section=[2, 1, 1], interleaved=True)),
            vision_config=dict(_QWEN_VISION, deepstack_visual_indexes=[0]),
            audio_config=dict(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=4,
                              encoder_ffn_dim=32, d_model=HIDDEN, output_dim=HIDDEN,
                              downsample_hidden_size=8),
            audio_token_id=VOCAB - 1, image_token_id=VOCAB - 2, video_token_id=VOCAB - 3))),
    # 3 experts and the skip class: 4 classes to route among
    "zaya": ("ZayaConfig", dict(_COMMON, head_dim=8, moe_intermediate_size=32,
                                num_experts=EXPERTS - 1, num_experts_per_tok=1,
                                router_hidden_size=16)),
    "openai_privacy_filter": ("OpenAIPrivacyFilterConfig", dict(
        _COMMON, intermediate_size=32, head_dim=8, num_local_experts=EXPERTS,
        num_experts_per_tok=2, sliding_window=16)),
}


def train_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer of VOCAB ids trained on ``texts``, wrapped for
    transformers (what ``AutoTokenizer.from_pretrained`` reads back)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def build(family: str, folder: Path, tokenizer, seed: int = 0, **overrides):
    """Save a random-weight model of ``family`` (and ``tokenizer``) to ``folder`` as
    safetensors; returns the model in eval mode (of an image-text family, its text model
    read back from the folder, the model an inspection routes through). ``overrides``:
    config values to change (a larger model for the benchmark)."""
    import torch
    import transformers

    # no progress bars: tqdm's monitor thread would outlive the test
    transformers.utils.logging.disable_progress_bar()
    cls_name, kwargs = FAMILIES[family]
    config = getattr(transformers, cls_name)(**{**kwargs, **overrides})
    torch.manual_seed(seed)
    if family == "switch_transformers":
        model = transformers.SwitchTransformersForConditionalGeneration(config)
    elif family in IMAGE_TEXT:
        model = getattr(transformers, IMAGE_TEXT[family])(config)
    else:
        from .families import FAMILIES as READ
        from .loading import model_class
        model = model_class(transformers, READ[family]).from_config(config)
    _randomise_zero_routers(model, family, config)
    model.eval()
    if family == "zaya":
        # its initial balancing biases (0, skip class -1) keep the skip class from ever
        # winning: -1 for every class makes it as likely as an expert (this transformers
        # sets the skip class's -1 again on loading, whatever the checkpoint holds)
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "balancing_biases"):
                    m.balancing_biases.fill_(-1.0)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if family in IMAGE_TEXT:
        from .families import FAMILIES as READ
        from .loading import model_class
        transformers.utils.logging.set_verbosity_error()   # (the vision weights it skips)
        model = model_class(transformers, READ[family]).from_pretrained(folder).eval()
    return model


def _randomise_zero_routers(model, family: str, config) -> None:
    """Routers whose weights start at zero (AFMoE's ``_init_weights`` zeroes its gate)
    give every token the same logits, so every token would tie on the same experts:
    their weights are drawn at random instead, at the model's initializer scale, as a
    trained router's differ."""
    import torch

    from .families import FAMILIES as READ
    from .families import router_classes

    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    classes = router_classes(model, READ.get(family))
    with torch.no_grad():
        for mod in model.modules():
            if classes and isinstance(mod, classes):
                for p in mod.parameters():
                    if p.dim() >= 2 and not p.any():
                        p.normal_(0.0, std)
                # a hash router's token -> experts table (DeepSeek-V4's tid2eid, all expert 0
                # until a checkpoint fills it): k distinct experts per token id, at random
                table = getattr(mod, "tid2eid", None)
                if isinstance(table, torch.Tensor) and not table.any():
                    n_experts = int(mod.num_experts)
                    table.copy_(torch.stack([torch.randperm(n_experts)[:table.shape[1]]
                                             for _ in range(table.shape[0])]))
