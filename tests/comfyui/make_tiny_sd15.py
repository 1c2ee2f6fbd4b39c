#!/usr/bin/env python3
"""Build a tiny RANDOM single-file SD1.5-layout checkpoint for ComfyUI e2e tests.

Standalone: needs only torch + safetensors (no ComfyUI import, no downloads).

Layout is the original-SD / "ldm" single-file layout that ComfyUI's
CheckpointLoaderSimple -> comfy.sd.load_state_dict_guess_config understands:

  model.diffusion_model.*          one-level UNet (model_channels=320,
                                   channel_mult=[1], num_res_blocks=[1],
                                   transformer_depth=[1], context_dim=768,
                                   conv proj_in/out => use_linear_in_transformer=False,
                                   no label_emb => adm_in_channels=None,
                                   no middle_block) -> detected as SD15
  cond_stage_model.transformer.text_model.*
                                   full-size CLIP-L text encoder (12 layers,
                                   768 wide, vocab 49408). ComfyUI builds CLIP-L
                                   from a fixed json config with 12 layers and
                                   loads with strict=False, so fewer layers would
                                   leave *uninitialised* weights -> not reduced.
  first_stage_model.taesd_encoder.* / taesd_decoder.* / vae_scale / vae_shift
                                   TAESD (comfy.sd.VAE picks TAESD when
                                   'taesd_decoder.1.weight' is present after the
                                   'first_stage_model.' prefix is stripped).

Usage: python make_tiny_sd15.py OUT.safetensors [--seed N] [--dtype fp16|bf16|fp32] [--te-fp8]
"""
import argparse
import math
import os
import time

import torch
from safetensors.torch import save_file

MC = 320           # model_channels (SD1.5 detection needs 320)
CTX = 768          # context_dim (SD1.5 detection needs 768)
TEMB = MC * 4      # time embedding dim
HEADS_FF = 4       # GEGLU ff multiplier
LATENT = 4


class Builder:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.sd = {}

    def rand(self, name, shape, std):
        self.sd[name] = torch.randn(*shape, generator=self.g) * std

    def const(self, name, shape, value):
        self.sd[name] = torch.full(shape, float(value))

    # --- primitives -------------------------------------------------------
    def linear(self, p, n_in, n_out, bias=True, std=None):
        self.rand(p + "weight", (n_out, n_in), std if std is not None else 1.0 / math.sqrt(n_in))
        if bias:
            self.const(p + "bias", (n_out,), 0.0)

    def conv(self, p, n_in, n_out, k=3, bias=True, gain=1.0):
        self.rand(p + "weight", (n_out, n_in, k, k), gain / math.sqrt(n_in * k * k))
        if bias:
            self.const(p + "bias", (n_out,), 0.0)

    def norm(self, p, n):
        self.const(p + "weight", (n,), 1.0)
        self.const(p + "bias", (n,), 0.0)

    # --- UNet (ldm openaimodel key layout) --------------------------------
    def resblock(self, p, n_in, n_out):
        self.norm(p + "in_layers.0.", n_in)
        self.conv(p + "in_layers.2.", n_in, n_out)
        self.linear(p + "emb_layers.1.", TEMB, n_out)
        self.norm(p + "out_layers.0.", n_out)
        self.conv(p + "out_layers.3.", n_out, n_out, gain=0.5)
        if n_in != n_out:
            self.conv(p + "skip_connection.", n_in, n_out, k=1)

    def spatial_transformer(self, p, ch):
        self.norm(p + "norm.", ch)
        self.conv(p + "proj_in.", ch, ch, k=1)          # 4-D => use_linear_in_transformer False
        b = p + "transformer_blocks.0."
        for a, ctx in (("attn1.", ch), ("attn2.", CTX)):
            self.linear(b + a + "to_q.", ch, ch, bias=False)
            self.linear(b + a + "to_k.", ctx, ch, bias=False)   # attn2.to_k => context_dim
            self.linear(b + a + "to_v.", ctx, ch, bias=False)
            self.linear(b + a + "to_out.0.", ch, ch, std=0.5 / math.sqrt(ch))
        self.linear(b + "ff.net.0.proj.", ch, ch * HEADS_FF * 2)   # GEGLU
        self.linear(b + "ff.net.2.", ch * HEADS_FF, ch, std=0.5 / math.sqrt(ch * HEADS_FF))
        for n in ("norm1.", "norm2.", "norm3."):
            self.norm(b + n, ch)
        self.conv(p + "proj_out.", ch, ch, k=1, gain=0.5)

    def unet(self, pre="model.diffusion_model."):
        self.linear(pre + "time_embed.0.", MC, TEMB)
        self.linear(pre + "time_embed.2.", TEMB, TEMB)
        self.conv(pre + "input_blocks.0.0.", LATENT, MC)
        # level 0: one res block + transformer, no downsample (single level)
        self.resblock(pre + "input_blocks.1.0.", MC, MC)
        self.spatial_transformer(pre + "input_blocks.1.1.", MC)
        # output blocks: num_res_blocks+1 = 2, input = ch + skip ch (320+320)
        for i in range(2):
            self.resblock(pre + "output_blocks.%d.0." % i, MC * 2, MC)
            self.spatial_transformer(pre + "output_blocks.%d.1." % i, MC)
        # no middle_block.* keys => transformer_depth_middle = -2 (no middle block)
        self.norm(pre + "out.0.", MC)
        self.conv(pre + "out.2.", MC, LATENT, gain=0.5)

    # --- CLIP-L text encoder (HF CLIPTextModel names) ---------------------
    def clip_l(self, pre="cond_stage_model.transformer.text_model.", layers=12,
               width=768, ff=3072, vocab=49408, positions=77):
        self.rand(pre + "embeddings.token_embedding.weight", (vocab, width), 0.02)
        self.rand(pre + "embeddings.position_embedding.weight", (positions, width), 0.01)
        for i in range(layers):
            p = pre + "encoder.layers.%d." % i
            for n in ("q_proj.", "k_proj.", "v_proj.", "out_proj."):
                self.linear(p + "self_attn." + n, width, width, std=0.02)
            self.norm(p + "layer_norm1.", width)
            self.norm(p + "layer_norm2.", width)
            self.linear(p + "mlp.fc1.", width, ff, std=0.02)
            self.linear(p + "mlp.fc2.", ff, width, std=0.02)
        self.norm(pre + "final_layer_norm.", width)

    # --- TAESD (comfy/taesd/taesd.py nn.Sequential indices) ---------------
    def taesd_block(self, p):
        for j in (0, 2, 4):   # conv.0, ReLU, conv.2, ReLU, conv.4 ; skip = Identity (64->64)
            self.conv(p + "conv.%d." % j, 64, 64, gain=0.5 if j == 4 else 1.0)

    def taesd(self, pre="first_stage_model."):
        e = pre + "taesd_encoder."
        self.conv(e + "0.", 3, 64)
        idx = 1
        self.taesd_block(e + "%d." % idx); idx += 1
        for _ in range(3):
            self.conv(e + "%d." % idx, 64, 64, bias=False); idx += 1   # stride-2 conv
            for _ in range(3):
                self.taesd_block(e + "%d." % idx); idx += 1
        self.conv(e + "%d." % idx, 64, LATENT)                           # 14
        d = pre + "taesd_decoder."
        self.conv(d + "1.", LATENT, 64)                                 # 0 Clamp, 2 ReLU
        idx = 3
        for _ in range(3):
            for _ in range(3):
                self.taesd_block(d + "%d." % idx); idx += 1
            idx += 1                                                     # Upsample
            self.conv(d + "%d." % idx, 64, 64, bias=False); idx += 1
        self.taesd_block(d + "%d." % idx); idx += 1                      # 18
        self.conv(d + "%d." % idx, 64, 3)                                # 19
        self.sd[pre + "vae_scale"] = torch.tensor(0.18215)               # as nodes.VAELoader 'taesd'
        self.sd[pre + "vae_shift"] = torch.tensor(0.0)


def build(seed=0, dtype=torch.float16, te_fp8=False):
    b = Builder(seed)
    b.unet()
    b.clip_l()
    b.taesd()
    out = {k: v.to(dtype).contiguous() for k, v in b.sd.items()}
    if te_fp8:
        # Text-encoder matrices as float8_e4m3fn: ComfyUI up-casts them on load
        # (verified: loads + samples fine). Halves file size (~275 -> ~158 MiB).
        for k, v in out.items():
            if k.startswith("cond_stage_model.") and v.ndim == 2:
                out[k] = v.to(torch.float8_e4m3fn)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--te-fp8", action="store_true",
                    help="store CLIP-L 2-D weights as float8_e4m3fn (~158 MiB file instead of ~275 MiB)")
    a = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    t0 = time.time()
    sd = build(a.seed, dtype, a.te_fp8)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    # single metadata key: safetensors (Rust HashMap) would reorder several keys
    # randomly, making the file bytes differ between runs with the same seed.
    save_file(sd, tmp, metadata={"format": "pt"})
    os.replace(tmp, a.out)
    n = sum(v.numel() for v in sd.values())
    groups = {}
    for k, v in sd.items():
        g = k.split(".")[0]
        groups[g] = groups.get(g, 0) + v.numel()
    print("wrote %s: %d tensors, %.1fM params (%s), %.1f MiB, %.2fs" % (
        a.out, len(sd), n / 1e6, ", ".join(f"{g}={c / 1e6:.1f}M" for g, c in groups.items()),
        os.path.getsize(a.out) / 2**20, time.time() - t0))


if __name__ == "__main__":
    main()
