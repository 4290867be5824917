"""Random-weight single-file SD 1.5 checkpoints and v1.1-layout ControlNets for tests and benchmarks.

ComfyUI recognises an SD 1.5 checkpoint from its keys and tensor shapes alone (DESIGN section 9): a UNet
under ``model.diffusion_model.`` whose first convolution has 320 output and 4 input channels, a 768-wide
cross-attention in at least one input level, 1x1 ``proj_in`` convolutions and no ``label_emb``. Depth and
the number of levels are free, so a *shallow* 320-channel UNet still loads through
``CheckpointLoaderSimple`` as SD 1.5 and runs a whole ControlNet graph on a CPU in about a second. The
text encoder (CLIP-L) and the VAE are always built by ComfyUI at full size from fixed configs, so they are
written at full size here too.

The state dicts are built here from the architecture's key names and shapes (no ComfyUI import), and
every tensor is drawn from a generator seeded by :func:`fdta_core.seeds.derive_seed` with the file's
seed and the tensor's key, so the same seed gives byte-identical files on every machine. Values are
scaled like a fresh initialisation (weights ~ N(0, 1/fan_in), norms ~ 1, biases small) so activations
stay finite and images differ visibly with the seed, the prompt and the control image.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..seeds import derive_seed

log = logging.getLogger(__name__)

Shape = tuple[int, ...]

#: Prefixes of a single-file (LDM layout) SD 1.5 checkpoint.
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
VAE_PREFIX = "first_stage_model."
#: Prefix of a ControlNet v1.1 (``control_v11p_sd15_canny.pth``) file.
CONTROL_PREFIX = "control_model."


@dataclass(frozen=True)
class UNetShape:
    """Structure of an LDM ``UNetModel`` (and of the ControlNet that matches it).

    ``transformer_depth[level]`` is the number of transformer blocks after every ResBlock of that level
    (0: no attention); ``transformer_depth_middle`` is -1 for a middle block without attention.
    """

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1,)
    num_res_blocks: int = 1
    transformer_depth: tuple[int, ...] = (1,)
    transformer_depth_middle: int = 1
    context_dim: int = 768
    in_channels: int = 4
    out_channels: int = 4

    def __post_init__(self) -> None:
        if len(self.transformer_depth) != len(self.channel_mult):
            raise ValueError("transformer_depth needs one entry per level of channel_mult")
        if self.transformer_depth_middle < -1:
            raise ValueError("transformer_depth_middle must be >= -1")

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4


#: The shallow variant for tests: one level, one ResBlock + one transformer block, 320 channels.
SHALLOW = UNetShape()
#: The real SD 1.5 UNet (860M parameters; 1.7 GB in fp16).
FULL = UNetShape(channel_mult=(1, 2, 4, 4), num_res_blocks=2, transformer_depth=(1, 1, 1, 0))

# CLIP-L text encoder (openai/clip-vit-large-patch14) as SD 1.5 uses it.
CLIP_VOCAB, CLIP_POSITIONS, CLIP_WIDTH, CLIP_LAYERS, CLIP_MLP = 49408, 77, 768, 12, 3072
# SD 1.5 VAE (AutoencoderKL f8, 4 latent channels).
VAE_CH, VAE_MULT, VAE_RES_BLOCKS, VAE_Z = 128, (1, 2, 4, 4), 2, 4


# ----------------------------------------------------------------------------- key/shape tables
def _conv(p: str, cin: int, cout: int, k: int) -> Iterator[tuple[str, Shape]]:
    yield f"{p}.weight", (cout, cin, k, k)
    yield f"{p}.bias", (cout,)


def _linear(p: str, cin: int, cout: int, bias: bool = True) -> Iterator[tuple[str, Shape]]:
    yield f"{p}.weight", (cout, cin)
    if bias:
        yield f"{p}.bias", (cout,)


def _norm(p: str, ch: int) -> Iterator[tuple[str, Shape]]:
    yield f"{p}.weight", (ch,)
    yield f"{p}.bias", (ch,)


def _resblock(p: str, cin: int, cout: int, emb: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.in_layers.0", cin)
    yield from _conv(f"{p}.in_layers.2", cin, cout, 3)
    yield from _linear(f"{p}.emb_layers.1", emb, cout)
    yield from _norm(f"{p}.out_layers.0", cout)
    yield from _conv(f"{p}.out_layers.3", cout, cout, 3)
    if cin != cout:
        yield from _conv(f"{p}.skip_connection", cin, cout, 1)


def _transformer(p: str, ch: int, depth: int, context_dim: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm", ch)
    yield from _conv(f"{p}.proj_in", ch, ch, 1)  # 1x1 conv: SD 1.x (SD 2.x uses a Linear)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        for name in ("to_q", "to_k", "to_v"):
            yield from _linear(f"{b}.attn1.{name}", ch, ch, bias=False)
        yield from _linear(f"{b}.attn1.to_out.0", ch, ch)
        yield from _linear(f"{b}.ff.net.0.proj", ch, ch * 4 * 2)  # GEGLU
        yield from _linear(f"{b}.ff.net.2", ch * 4, ch)
        yield from _linear(f"{b}.attn2.to_q", ch, ch, bias=False)
        yield from _linear(f"{b}.attn2.to_k", context_dim, ch, bias=False)
        yield from _linear(f"{b}.attn2.to_v", context_dim, ch, bias=False)
        yield from _linear(f"{b}.attn2.to_out.0", ch, ch)
        for n in ("norm1", "norm2", "norm3"):
            yield from _norm(f"{b}.{n}", ch)
    yield from _conv(f"{p}.proj_out", ch, ch, 1)


def _unet_encoder(cfg: UNetShape) -> tuple[list[tuple[str, Shape]], list[int], int]:
    """Time embedding, input blocks and middle block (shared by the UNet and the ControlNet).

    Returns the key table, the channel count after each input block, and the final channel count.
    """
    mc, emb = cfg.model_channels, cfg.time_embed_dim
    out: list[tuple[str, Shape]] = []
    out += _linear("time_embed.0", mc, emb)
    out += _linear("time_embed.2", emb, emb)
    out += _conv("input_blocks.0.0", cfg.in_channels, mc, 3)
    chans = [mc]
    ch, idx = mc, 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            out += _resblock(f"input_blocks.{idx}.0", ch, mult * mc, emb)
            ch = mult * mc
            if cfg.transformer_depth[level] > 0:
                out += _transformer(
                    f"input_blocks.{idx}.1", ch, cfg.transformer_depth[level], cfg.context_dim
                )
            chans.append(ch)
            idx += 1
        if level != len(cfg.channel_mult) - 1:
            out += _conv(f"input_blocks.{idx}.0.op", ch, ch, 3)  # stride-2 Downsample
            chans.append(ch)
            idx += 1
    out += _resblock("middle_block.0", ch, ch, emb)
    if cfg.transformer_depth_middle >= 0:
        out += _transformer("middle_block.1", ch, cfg.transformer_depth_middle, cfg.context_dim)
        out += _resblock("middle_block.2", ch, ch, emb)
    return out, chans, ch


def unet_shapes(cfg: UNetShape = SHALLOW) -> dict[str, Shape]:
    """Key -> shape of an LDM ``UNetModel`` state dict (keys without the checkpoint prefix)."""
    out, chans, ch = _unet_encoder(cfg)
    mc, emb = cfg.model_channels, cfg.time_embed_dim
    idx = 0
    for level in reversed(range(len(cfg.channel_mult))):
        mult = cfg.channel_mult[level]
        for i in range(cfg.num_res_blocks + 1):
            ich = chans.pop()
            out += _resblock(f"output_blocks.{idx}.0", ch + ich, mult * mc, emb)
            ch = mult * mc
            n = 1
            if cfg.transformer_depth[level] > 0:
                out += _transformer(
                    f"output_blocks.{idx}.1", ch, cfg.transformer_depth[level], cfg.context_dim
                )
                n = 2
            if level and i == cfg.num_res_blocks:
                out += _conv(f"output_blocks.{idx}.{n}.conv", ch, ch, 3)  # Upsample
            idx += 1
    out += _norm("out.0", ch)
    out += _conv("out.2", mc, cfg.out_channels, 3)
    return dict(out)


def controlnet_shapes(cfg: UNetShape = SHALLOW, hint_channels: int = 3) -> dict[str, Shape]:
    """Key -> shape of a ComfyUI/lllyasviel ``ControlNet`` matching a UNet of structure ``cfg``."""
    out, chans, ch = _unet_encoder(cfg)
    for i, c in enumerate(chans):
        out += _conv(f"zero_convs.{i}.0", c, c, 1)
    hint = [
        (hint_channels, 16),
        (16, 16),
        (16, 32),
        (32, 32),
        (32, 96),
        (96, 96),
        (96, 256),
        (256, cfg.model_channels),
    ]
    for i, (cin, cout) in enumerate(hint):
        out += _conv(f"input_hint_block.{2 * i}", cin, cout, 3)
    out += _conv("middle_block_out.0", ch, ch, 1)
    return dict(out)


def clip_l_shapes() -> dict[str, Shape]:
    """Key -> shape of the CLIP-L text model (keys below ``text_model.``)."""
    w = CLIP_WIDTH
    out: list[tuple[str, Shape]] = [
        ("embeddings.token_embedding.weight", (CLIP_VOCAB, w)),
        ("embeddings.position_embedding.weight", (CLIP_POSITIONS, w)),
    ]
    for i in range(CLIP_LAYERS):
        p = f"encoder.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += _linear(f"{p}.self_attn.{name}", w, w)
        out += _norm(f"{p}.layer_norm1", w)
        out += _linear(f"{p}.mlp.fc1", w, CLIP_MLP)
        out += _linear(f"{p}.mlp.fc2", CLIP_MLP, w)
        out += _norm(f"{p}.layer_norm2", w)
    out += _norm("final_layer_norm", w)
    return dict(out)


def _vae_resnet(p: str, cin: int, cout: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm1", cin)
    yield from _conv(f"{p}.conv1", cin, cout, 3)
    yield from _norm(f"{p}.norm2", cout)
    yield from _conv(f"{p}.conv2", cout, cout, 3)
    if cin != cout:
        yield from _conv(f"{p}.nin_shortcut", cin, cout, 1)


def _vae_mid(p: str, ch: int) -> Iterator[tuple[str, Shape]]:
    yield from _vae_resnet(f"{p}.mid.block_1", ch, ch)
    yield from _norm(f"{p}.mid.attn_1.norm", ch)
    for name in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{p}.mid.attn_1.{name}", ch, ch, 1)
    yield from _vae_resnet(f"{p}.mid.block_2", ch, ch)


def vae_shapes() -> dict[str, Shape]:
    """Key -> shape of the SD 1.5 ``AutoencoderKL`` (LDM layout, keys below ``first_stage_model.``)."""
    ch, mult, nrb, z = VAE_CH, VAE_MULT, VAE_RES_BLOCKS, VAE_Z
    out: list[tuple[str, Shape]] = []
    out += _conv("encoder.conv_in", 3, ch, 3)
    in_mult = (1, *mult)
    block_in = ch
    for lvl in range(len(mult)):
        block_in = ch * in_mult[lvl]
        block_out = ch * mult[lvl]
        for j in range(nrb):
            out += _vae_resnet(f"encoder.down.{lvl}.block.{j}", block_in, block_out)
            block_in = block_out
        if lvl != len(mult) - 1:
            out += _conv(f"encoder.down.{lvl}.downsample.conv", block_in, block_in, 3)
    out += _vae_mid("encoder", block_in)
    out += _norm("encoder.norm_out", block_in)
    out += _conv("encoder.conv_out", block_in, 2 * z, 3)
    block_in = ch * mult[-1]
    out += _conv("decoder.conv_in", z, block_in, 3)
    out += _vae_mid("decoder", block_in)
    for lvl in reversed(range(len(mult))):
        block_out = ch * mult[lvl]
        for j in range(nrb + 1):
            out += _vae_resnet(f"decoder.up.{lvl}.block.{j}", block_in, block_out)
            block_in = block_out
        if lvl != 0:
            out += _conv(f"decoder.up.{lvl}.upsample.conv", block_in, block_in, 3)
    out += _norm("decoder.norm_out", block_in)
    out += _conv("decoder.conv_out", block_in, 3, 3)
    out += _conv("quant_conv", 2 * z, 2 * z, 1)
    out += _conv("post_quant_conv", z, z, 1)
    return dict(out)


def sd15_checkpoint_shapes(cfg: UNetShape = SHALLOW) -> dict[str, Shape]:
    """Every key (with prefixes) and shape of a single-file SD 1.5 checkpoint with UNet ``cfg``."""
    out: dict[str, Shape] = {}
    out.update({UNET_PREFIX + k: s for k, s in unet_shapes(cfg).items()})
    out.update({CLIP_PREFIX + k: s for k, s in clip_l_shapes().items()})
    out.update({VAE_PREFIX + k: s for k, s in vae_shapes().items()})
    return out


# ----------------------------------------------------------------------------- filling and writing
def _fill(key: str, shape: Shape, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """One tensor drawn from a generator seeded by (seed, key): independent of the order of keys."""
    g = torch.Generator().manual_seed(derive_seed(seed, "sd-random-weights", key))
    t = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    is_norm = any(n in key for n in ("norm", "in_layers.0.", "out_layers.0.", "out.0.")) and len(shape) == 1
    if "embedding" in key:
        t.mul_(0.02)
    elif leaf == "bias":
        t.mul_(0.02)
    elif is_norm:  # GroupNorm / LayerNorm scale: around 1
        t.mul_(0.02).add_(1.0)
    else:  # conv / linear weights: unit-variance outputs for unit-variance inputs
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        t.mul_(fan_in**-0.5)
    return t.to(dtype)


def random_state_dict(
    shapes: dict[str, Shape], seed: int, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """Fill every key of ``shapes`` from its own seeded generator."""
    return {k: _fill(k, s, seed, dtype) for k, s in shapes.items()}


_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def _save(
    shapes: dict[str, Shape], seed: int, dtype: torch.dtype, path: Path, metadata: dict[str, str]
) -> Path:
    """Write a ``.safetensors`` file tensor by tensor (peak memory: one tensor), byte-identical for the
    same inputs (sorted header keys; the safetensors library orders metadata at random)."""
    import json
    import struct

    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    keys = sorted(shapes)
    for k in keys:
        n = math.prod(shapes[k]) * itemsize
        header[k] = {"dtype": _DTYPES[dtype], "shape": list(shapes[k]), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for k in keys:
            f.write(_fill(k, shapes[k], seed, dtype).contiguous().view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)
    return path


def write_sd15_checkpoint(
    path: str | os.PathLike, *, seed: int = 0, unet: UNetShape = SHALLOW, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a random-weight single-file SD 1.5 checkpoint (``.safetensors``) that ComfyUI's
    ``CheckpointLoaderSimple`` loads as SD 1.5. About 0.41 GB with the shallow UNet."""
    path = Path(path)
    shapes = sd15_checkpoint_shapes(unet)
    meta = {"fdta": "random-weight SD 1.5 for tests", "seed": str(seed), "unet": repr(unet)}
    log.info("writing random SD 1.5 checkpoint (%d tensors) to %s", len(shapes), path)
    return _save(shapes, seed, dtype, path, meta)


def write_controlnet(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    unet: UNetShape = SHALLOW,
    hint_channels: int = 3,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a random-weight ControlNet in the v1.1 layout (every key under ``control_model.``), built
    to match a UNet of structure ``unet`` (ComfyUI skips a ControlNet that does not match)."""
    path = Path(path)
    shapes = {CONTROL_PREFIX + k: s for k, s in controlnet_shapes(unet, hint_channels).items()}
    meta = {"fdta": "random-weight ControlNet v1.1 layout for tests", "seed": str(seed), "unet": repr(unet)}
    log.info("writing random ControlNet (%d tensors) to %s", len(shapes), path)
    return _save(shapes, derive_seed(seed, "controlnet"), dtype, path, meta)


@dataclass(frozen=True)
class RandomSDModels:
    """Where :func:`write_random_sd_models` put the files (names relative to their ComfyUI folders)."""

    root: Path
    checkpoint: Path
    controlnet: Path

    @property
    def checkpoint_name(self) -> str:
        return self.checkpoint.name

    @property
    def controlnet_name(self) -> str:
        return self.controlnet.name


def write_random_sd_models(
    models_dir: str | os.PathLike,
    *,
    seed: int = 0,
    unet: UNetShape = SHALLOW,
    checkpoint_name: str = "fdta_random_sd15.safetensors",
    controlnet_name: str = "fdta_random_sd15_controlnet.safetensors",
) -> RandomSDModels:
    """Write a matching checkpoint and ControlNet under ``models_dir/checkpoints`` and
    ``models_dir/controlnet`` (a layout that ``extra_model_paths.yaml`` can point at)."""
    root = Path(models_dir)
    ckpt = write_sd15_checkpoint(root / "checkpoints" / checkpoint_name, seed=seed, unet=unet)
    cnet = write_controlnet(root / "controlnet" / controlnet_name, seed=seed, unet=unet)
    return RandomSDModels(root, ckpt, cnet)
