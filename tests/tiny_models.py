"""Tiny random models built from configs for offline tests: a CLIP scorer and a diffusers pipeline."""

import json
from pathlib import Path


def tiny_clip_tokenizer(d: Path):
    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    return tok, len(vocab)


def make_tiny_scorer(d: Path) -> Path:
    """A tiny random CLIP model (text + vision) with a local tokenizer and preprocessor config."""
    import transformers

    d.mkdir(parents=True, exist_ok=True)
    tok, n = tiny_clip_tokenizer(d)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 32},
                                                            "crop_size": {"height": 32, "width": 32}}))
    return d


def make_tiny_pipeline(d: Path, seed: int = 0) -> Path:
    """A tiny random StableDiffusionPipeline saved as a local diffusers folder (64 px images on CPU)."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    tok, n = tiny_clip_tokenizer(d)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=8)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d)
    return d

