"""A tiny, random-weight ControlNet pipeline that stands in for SD1.5 + seg-ControlNet offline.

No weights can be downloaded here, yet tests and demos must exercise the real
`from_pretrained` path. So the pipeline is built from configs with a fixed seed,
saved with `save_pretrained`, and loaded back like any hub checkpoint. The
tokenizer is the real CLIP BPE (rebuilt from the vocabulary file open_clip
ships), so prompt handling is the production one; only the weights are fake.
A second tiny ControlNet stands in for the photo (Canny / line art) ControlNet
of the optional second condition.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaug.models.hub import quiet_progress_bars

if TYPE_CHECKING:
    from diffusers import StableDiffusionControlNetPipeline
    from transformers import CLIPTokenizer

TINY_RECIPE_VERSION = 1  # bump when the architecture or initialisation below changes
MODEL_INDEX = "model_index.json"
MODEL_CONFIG = "config.json"
RECIPE_FILE = "cgaug_tiny.json"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # merges the CLIP vocabulary uses (lines 1..48894 of the BPE file)
CLIP_VOCAB_SIZE = 49408
CONTROL_INIT_STD = 0.3  # see _wake_controlnet


def tiny_model_dir() -> Path:
    """The per-user cache location of the tiny pipeline.

    Deliberately not configurable through `CGAUG_*` variables: that prefix is reserved for
    config keys, and the XDG variable already lets tests and CI redirect it.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cgaug" / "models" / "tiny"


def tiny_photo_controlnet_dir() -> Path:
    """The per-user cache location of the tiny photo ControlNet, next to the tiny pipeline."""
    return tiny_model_dir().with_name("tiny-photo-controlnet")


def is_pipeline_dir(path: str | Path) -> bool:
    """True when `path` holds a saved pipeline; the atomic rename makes model_index.json sufficient."""
    return (Path(path) / MODEL_INDEX).is_file()


def is_model_dir(path: str | Path) -> bool:
    """True when `path` holds a saved single model (a ControlNet): its config.json."""
    return (Path(path) / MODEL_CONFIG).is_file()


def ensure_tiny_model() -> Path:
    """The tiny pipeline in the user cache, built on first use (safe when processes race)."""
    return build_tiny_pipeline(tiny_model_dir())


def ensure_tiny_photo_controlnet() -> Path:
    """The tiny photo ControlNet in the user cache, built on first use (safe when processes race)."""
    return build_tiny_photo_controlnet(tiny_photo_controlnet_dir())


def build_tiny_pipeline(dest: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to `dest` atomically and return `dest`.

    The pipeline is built in a temporary directory next to `dest` and renamed into place,
    so a reader never sees a half-written model. If `dest` already holds a pipeline, nothing
    is done; if another process wins the race, its copy is kept and ours is discarded.

    Raises:
        FileExistsError: `dest` exists, is not empty and is not a saved pipeline.
    """
    return build_atomically(dest, MODEL_INDEX, lambda tmp: _save(tiny_pipeline(seed), tmp, seed))


def build_tiny_photo_controlnet(dest: str | Path, seed: int = 0) -> Path:
    """Write the tiny photo ControlNet to `dest` atomically (as `build_tiny_pipeline` does) and return it.

    It fits the tiny pipeline's UNet and differs from the tiny seg ControlNet, so a test can
    tell whether the second condition reached the output.

    Raises:
        FileExistsError: `dest` exists, is not empty and is not a saved ControlNet.
    """
    return build_atomically(dest, MODEL_CONFIG, lambda tmp: _save(tiny_photo_controlnet(seed), tmp, seed))


def build_atomically(dest: str | Path, marker: str, write: Any) -> Path:
    """Run `write(tmp)` in a fresh directory next to `dest` and rename it to `dest` (see `build_tiny_pipeline`).

    `marker` is the file whose presence means `dest` is complete: nothing is done then.
    """
    dest = Path(dest).expanduser()
    if (dest / marker).is_file():
        return dest
    _check_replaceable(dest, marker)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the published model should read like any directory
        write(tmp)
        _publish(tmp, dest, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _save(model: Any, directory: Path, seed: int) -> None:
    with quiet_progress_bars():
        model.save_pretrained(directory, safe_serialization=True)
    (directory / RECIPE_FILE).write_text(json.dumps({"recipe_version": TINY_RECIPE_VERSION, "seed": seed}))


def _check_replaceable(dest: Path, marker: str) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(
            f"{dest}: expected a saved model ({marker}) or a missing/empty directory, "
            "found other content; remove it or choose another destination"
        )


def _publish(tmp: Path, dest: Path, marker: str) -> None:
    """Rename `tmp` to `dest`; losing the race to a concurrent builder is fine."""
    try:
        os.rename(tmp, dest)  # replaces an empty directory, fails on a non-empty one
    except OSError:
        if not (dest / marker).is_file():
            raise


def tiny_pipeline(seed: int = 0) -> StableDiffusionControlNetPipeline:
    """The tiny pipeline in memory, in eval mode; the same seed gives the same weights.

    Each component gets its own seed so that changing one component leaves the others'
    weights unchanged, and the global torch RNG is left untouched.
    """
    from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler

    unet = _seeded(seed, 0, _tiny_unet)
    controlnet = _seeded(seed, 1, lambda: _tiny_controlnet(unet))
    vae = _seeded(seed, 2, _tiny_vae)
    text_encoder = _seeded(seed, 3, _tiny_text_encoder)
    scheduler = UniPCMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    for module in (unet, controlnet, vae, text_encoder):
        module.eval()  # hand-built modules start in train mode; from_pretrained returns eval mode
    return StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet, controlnet=controlnet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )


def tiny_photo_controlnet(seed: int = 0) -> Any:
    """The tiny photo ControlNet in memory, in eval mode: the tiny UNet's ControlNet with its own seed."""
    unet = _seeded(seed, 0, _tiny_unet)
    return _seeded(seed, 4, lambda: _tiny_controlnet(unet)).eval()


def seeded(seed: int, build: Any) -> Any:
    """`build()` with torch's CPU RNG seeded by `seed`, leaving the global RNG as it was.

    Every tiny model is built this way, so the same seed gives the same weights.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _seeded(seed: int, component: int, build: Any) -> Any:
    """Each component of a tiny model has its own seed, so changing one leaves the others' weights alone."""
    return seeded(seed * 1000 + component, build)


def _tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )


def _tiny_controlnet(unet: Any) -> Any:
    from diffusers import ControlNetModel

    # 2**(len(channels)-1) must equal the VAE's downscale factor (2 for two VAE blocks)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    _wake_controlnet(controlnet)
    return controlnet


def _wake_controlnet(controlnet: Any) -> None:
    """Give the zero-initialised output convolutions small random weights.

    A fresh ControlNet adds exactly zero to the UNet, so the conditioning map would have
    no effect at all and a test could not tell a pipeline that ignores it from one that
    uses it. With these weights a different map changes the 2-step output by about half a
    grey level on average: visible in uint8, still far below the effect of the seed.
    """
    import torch

    zero_convs = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
                  controlnet.controlnet_mid_block]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=CONTROL_INIT_STD)
            torch.nn.init.normal_(conv.bias, std=CONTROL_INIT_STD)


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=64,
    )


def _tiny_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    ))


def bpe_vocab_path() -> Path:
    """open_clip's bundled CLIP BPE file, located without importing open_clip (which pulls torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open_clip (package open_clip_torch) is needed for the CLIP vocabulary of the tiny model; "
            "install the 'gen' extra: pip install 'cgaug[gen]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected open_clip's CLIP BPE vocabulary file, found nothing")
    return path


def clip_tokenizer() -> CLIPTokenizer:
    """The real CLIP tokenizer (ids identical to open_clip's), built offline from the BPE file."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe_vocab_path()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges] + ["<|startoftext|>", "<|endoftext|>"]
    ids = {token: i for i, token in enumerate(vocab)}
    return CLIPTokenizer(vocab=ids, merges=merges, model_max_length=77)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) reversible byte -> printable character map, in vocabulary order.

    Written out here because transformers 5 no longer exports it; open_clip's copy needs
    an import of open_clip (and torchvision).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def count_parameters(path: str | Path) -> int:
    """Parameters stored in a saved pipeline's safetensors files, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(path).rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                total += _numel(handle.get_slice(key).get_shape())
    return total


def _numel(shape: list[int]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


__all__ = [
    "build_atomically", "build_tiny_photo_controlnet", "build_tiny_pipeline", "clip_tokenizer", "count_parameters",
    "ensure_tiny_model", "ensure_tiny_photo_controlnet", "is_model_dir", "is_pipeline_dir", "seeded",
    "tiny_model_dir", "tiny_photo_controlnet", "tiny_photo_controlnet_dir", "tiny_pipeline",
]
