"""Tiny random-initialised diffusion models, built offline, for tests and the CPU demo.

Each family is saved as a normal diffusers folder (``model_index.json`` + one subfolder per
component, safetensors weights, tokenizers included), so the trainer loads it with the same
``from_pretrained`` calls as the real weights. Nothing is downloaded: tokenizers are built from a
small byte-level vocabulary with the ``tokenizers`` library. Building is deterministic (fixed
seeds) and takes a few seconds.

    python -m identity_pipeline.training.tiny_models --out models/ --family qwen-image
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

FAMILIES = ("qwen-image", "flux", "sd3", "sdxl")

# Words the tiny tokenizers know as whole tokens; anything else falls back to bytes (BPE) or
# <unk> (T5). Qwen's prompt template is included so it tokenizes to exactly the 34 tokens the
# pipeline drops (``prompt_template_encode_start_idx``), like the real tokenizer.
QWEN_PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_TEMPLATE_PREFIX_TOKENS = 34
CAPTION_WORDS = (
    "a an the photo picture portrait group of and with other people person man woman child "
    "alice bob carol dave eve face smiling outdoors indoors"
)
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

TINY_TEXT_HIDDEN = 32
TINY_T5_HIDDEN = 32


# ----------------------------------------------------------------------------------------------
# Tokenizers


def _chain_merges(pieces: Sequence[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that build every piece left to right, adding each prefix to ``vocab``.

    Left-to-right chains never compete with each other on the words they were made from, so each
    known word ends up as one token, like a real tokenizer's frequent words.
    """
    merges: list[tuple[str, str]] = []
    for piece in pieces:
        current = piece[0]
        for char in piece[1:]:
            merged = current + char
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((current, char))
            current = merged
    return merges


def _byte_alphabet() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def build_qwen_tokenizer():
    """A Qwen2 byte-level BPE tokenizer with the real pre-tokenizer and special tokens."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    corpus = QWEN_PROMPT_TEMPLATE.replace("<|im_start|>", "\n").replace("<|im_end|>", "\n")
    words = CAPTION_WORDS.split()
    corpus += " " + " ".join(words + [word.capitalize() for word in words])
    pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(corpus)]
    vocab = {char: index for index, char in enumerate(_byte_alphabet())}
    merges = _chain_merges(pieces, vocab)
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    prefix = QWEN_PROMPT_TEMPLATE.split("{}")[0]
    prefix_tokens = len(tokenizer(prefix).input_ids)
    if prefix_tokens != QWEN_TEMPLATE_PREFIX_TOKENS:
        raise RuntimeError(
            f"tiny Qwen tokenizer splits the prompt template into {prefix_tokens} tokens, "
            f"the pipeline drops {QWEN_TEMPLATE_PREFIX_TOKENS}"
        )
    return tokenizer


def build_clip_tokenizer():
    """A CLIP byte-level BPE tokenizer (lower-case words, ``</w>`` word ends)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in alphabet:
        vocab[char] = len(vocab)
    for char in alphabet:
        vocab[char + "</w>"] = len(vocab)
    splitter = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"), "removed", True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words = [piece for piece, _ in splitter.pre_tokenize_str(CAPTION_WORDS)]
    pieces = [list(word[:-1]) + [word[-1] + "</w>"] for word in words if len(word) > 1]
    merges: list[tuple[str, str]] = []
    for symbols in pieces:
        current = symbols[0]
        for symbol in symbols[1:]:
            merged = current + symbol
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((current, symbol))
            current = merged
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer():
    """A T5 unigram tokenizer: whole known words, single characters, ``<unk>`` for the rest."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for char in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'-":
        vocab.append((char, -8.0))
    for word in CAPTION_WORDS.split():
        vocab.append(("▁" + word, -3.0))
        vocab.append(("▁" + word.capitalize(), -3.5))
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _padded_vocab_size(tokenizer) -> int:
    return -(-len(tokenizer) // 64) * 64


# ----------------------------------------------------------------------------------------------
# Text encoders


def _tiny_clip_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TINY_TEXT_HIDDEN,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )


def _tiny_t5(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=TINY_T5_HIDDEN,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _tiny_qwen_text_encoder(vocab_size: int, special_ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": TINY_TEXT_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": special_ids["<|endoftext|>"],
            "eos_token_id": special_ids["<|im_end|>"],
            "pad_token_id": special_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TINY_TEXT_HIDDEN,
            "fullatt_block_indexes": [0],
        },
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_HIDDEN,
        bos_token_id=special_ids["<|endoftext|>"],
        eos_token_id=special_ids["<|im_end|>"],
        image_token_id=special_ids["<|image_pad|>"],
        video_token_id=special_ids["<|video_pad|>"],
        vision_start_token_id=special_ids["<|vision_start|>"],
        vision_end_token_id=special_ids["<|vision_end|>"],
        vision_token_id=special_ids["<|vision_pad|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config)


# ----------------------------------------------------------------------------------------------
# Families


def _tiny_autoencoder_kl(shift_factor: float | None, scaling_factor: float):
    """A 4x-stride VAE that keeps each 4 x 4 block's colour (``tiny_vae``): two photos give
    clearly different latents, and the latent normalisation is checked against a decoder that
    depends on its input."""
    from identity_pipeline.training.tiny_vae import build_autoencoder_kl

    return build_autoencoder_kl(shift_factor, scaling_factor)


def build_qwen_image(seed: int = 0, width: int = 1):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    from identity_pipeline.training.tiny_vae import build_qwen_image_vae

    tokenizer = build_qwen_tokenizer()
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    torch.manual_seed(seed)
    text_encoder = _tiny_qwen_text_encoder(_padded_vocab_size(tokenizer), special_ids)
    torch.manual_seed(seed + 1)
    z_dim = 4
    # Not 0/1 on purpose: the trainer must normalise with them like the real VAE. Built to keep
    # each 4 x 4 block's colour (``tiny_vae``), not drawn at random.
    vae = build_qwen_image_vae(
        latents_mean=[0.1, -0.2, 0.05, 0.3], latents_std=[1.5, 0.8, 1.2, 2.0]
    )
    torch.manual_seed(seed + 2)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=z_dim * 4,
        out_channels=z_dim,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2 * width,
        joint_attention_dim=TINY_TEXT_HIDDEN,
        axes_dims_rope=(4, 6, 6),
    )
    # The real Qwen-Image scheduler settings (dynamic, resolution-dependent shift).
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )
    return QwenImagePipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def build_flux(seed: int = 0, width: int = 1):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_tiny_clip_config(_padded_vocab_size(clip_tokenizer)))
    torch.manual_seed(seed + 1)
    text_encoder_2 = _tiny_t5(_padded_vocab_size(t5_tokenizer))
    torch.manual_seed(seed + 2)
    vae = _tiny_autoencoder_kl(shift_factor=0.1159, scaling_factor=0.3611)
    torch.manual_seed(seed + 3)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2 * width,
        joint_attention_dim=TINY_T5_HIDDEN,
        pooled_projection_dim=TINY_TEXT_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=4096,
        max_shift=1.15,
        shift=3.0,
        use_dynamic_shifting=True,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def build_sd3(seed: int = 0, width: int = 1):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    clip_config = _tiny_clip_config(_padded_vocab_size(clip_tokenizer))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(clip_config)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config)
    torch.manual_seed(seed + 2)
    text_encoder_3 = _tiny_t5(_padded_vocab_size(t5_tokenizer))
    torch.manual_seed(seed + 3)
    vae = _tiny_autoencoder_kl(shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(seed + 4)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4 * width,
        caption_projection_dim=32 * width,
        # CLIP-L + CLIP-G hidden states are concatenated (2 x 32) and padded to the T5 width.
        joint_attention_dim=TINY_T5_HIDDEN,
        pooled_projection_dim=2 * TINY_TEXT_HIDDEN,
        out_channels=4,
        pos_embed_max_size=32,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return StableDiffusion3Pipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
        transformer=transformer,
    )


def build_sdxl(seed: int = 0, width: int = 1):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    clip_tokenizer = build_clip_tokenizer()
    clip_config = _tiny_clip_config(_padded_vocab_size(clip_tokenizer))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(clip_config)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config)
    torch.manual_seed(seed + 2)
    vae = _tiny_autoencoder_kl(shift_factor=None, scaling_factor=0.13025)
    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(
        block_out_channels=(8 * width, 16 * width),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        # 6 size/crop ids x 8 + the pooled CLIP-G projection (32).
        projection_class_embeddings_input_dim=6 * 8 + TINY_TEXT_HIDDEN,
        cross_attention_dim=2 * TINY_TEXT_HIDDEN,
        norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer,
        tokenizer_2=build_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


# A random-initialised denoiser barely listens to its timestep: from t = 0.1 to t = 0.9 its output
# moves 5-15% where another input moves it ~130%, so a timestep fed in the wrong unit would change
# nothing a test could see. A trained model's prediction depends on t as much as on its input;
# scaling the timestep embedding's output layer by this gain gets the tiny ones there (60-80%).
TIME_EMBEDDING_GAIN = 10.0
TIME_EMBEDDING_LAYER = {
    "qwen-image": "time_text_embed.timestep_embedder.linear_2",
    "flux": "time_text_embed.timestep_embedder.linear_2",
    "sd3": "time_text_embed.timestep_embedder.linear_2",
    "sdxl": "time_embedding.linear_2",
}


def _listen_to_time(family: str, pipeline) -> None:
    denoiser = pipeline.unet if family == "sdxl" else pipeline.transformer
    layer = denoiser.get_submodule(TIME_EMBEDDING_LAYER[family])
    with torch.no_grad():
        layer.weight.mul_(TIME_EMBEDDING_GAIN)
        layer.bias.mul_(TIME_EMBEDDING_GAIN)


BUILDERS: dict[str, Callable[..., object]] = {
    "qwen-image": build_qwen_image,
    "flux": build_flux,
    "sd3": build_sd3,
    "sdxl": build_sdxl,
}


def build_tiny_pipeline(family: str, seed: int = 0, width: int = 1):
    """The tiny pipeline object of ``family`` (in memory, not saved). ``width`` multiplies the
    denoiser's attention heads (UNet channels): 4 gives a LoRA room to memorise two photos."""
    try:
        builder = BUILDERS[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}") from None
    pipeline = builder(seed, width)
    _listen_to_time(family, pipeline)
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # as from_pretrained leaves them: no dropout (T5 has 0.1)
    return pipeline


def save_tiny_model(family: str, destination: Path, seed: int = 0, width: int = 1) -> Path:
    """Build the tiny ``family`` pipeline and save it as a diffusers folder at ``destination``.

    An existing complete folder (``model_index.json`` present) is kept: same family, seed and
    width give the same weights, so rebuilding would only cost time.
    """
    destination = Path(destination)
    if (destination / "model_index.json").is_file():
        return destination
    pipeline = build_tiny_pipeline(family, seed, width)
    partial = destination.with_name(f".{destination.name}.partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    pipeline.save_pretrained(partial, safe_serialization=True)
    partial.rename(destination)
    return destination


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to save into (one subfolder each)")
    parser.add_argument(
        "--family", choices=(*FAMILIES, "all"), default="qwen-image", help="model family"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1, help="attention heads multiplier")
    args = parser.parse_args(argv)
    families = FAMILIES if args.family == "all" else (args.family,)
    for family in families:
        path = save_tiny_model(family, Path(args.out) / f"tiny-{family}", args.seed, args.width)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
