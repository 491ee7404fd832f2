"""Full-size SD1.5 architectures as JSON, for building the real networks with random weights offline.

No weights can be downloaded here, yet the benchmark must time (and count the FLOPs of)
the production architectures. The files in `sd15/` are the public `config.json` files of
`stable-diffusion-v1-5/stable-diffusion-v1-5` (unet, vae, text_encoder, scheduler) and
`lllyasviel/sd-controlnet-seg` (controlnet_seg, the same architecture as ControlNet's
`cldm_v15.yaml`), trimmed of keys that only record library versions. Built, they have the
published parameter counts: UNet 859.52 M, ControlNet 361.28 M, VAE 83.65 M, CLIP ViT-L/14
text encoder 123.06 M.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionControlNetPipeline

CONFIG_DIR = Path(__file__).parent
SD15 = "sd15"
COMPONENT_FILES = {"unet": "unet.json", "controlnet": "controlnet_seg.json", "vae": "vae.json",
                   "text_encoder": "text_encoder.json", "scheduler": "scheduler.json"}


def component_config(component: str, family: str = SD15) -> dict[str, Any]:
    """One component's config as a dict (`component` is a key of COMPONENT_FILES)."""
    if component not in COMPONENT_FILES:
        raise ValueError(f"expected a component in {sorted(COMPONENT_FILES)}, found {component!r}")
    path = CONFIG_DIR / family / COMPONENT_FILES[component]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileNotFoundError(f"{path}: expected the {component} config as JSON, "
                                f"could not read it ({exc})") from exc


def random_components(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0,
                      family: str = SD15) -> dict[str, Any]:
    """UNet, ControlNet, VAE, text encoder and scheduler with random weights, in eval mode.

    On `device="meta"` nothing is allocated: enough to count parameters and FLOPs of the
    full-size networks on any machine. The global RNG state is left as it was.
    """
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = {k: v for k, v in component_config("text_encoder", family).items() if k != "architectures"}
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)
        modules = {
            "unet": UNet2DConditionModel.from_config(component_config("unet", family)),
            "controlnet": ControlNetModel.from_config(component_config("controlnet", family)),
            "vae": AutoencoderKL.from_config(component_config("vae", family)),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**text_config)),
        }
    for module in modules.values():
        module.eval()
        if dtype is not None:  # nn.Module.to: diffusers' override warns about fp32 modules SD1.5 lacks
            torch.nn.Module.to(module, dtype=dtype)
    return {**modules, "scheduler": PNDMScheduler.from_config(component_config("scheduler", family))}


def random_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0,
                    family: str = SD15) -> StableDiffusionControlNetPipeline:
    """The full-size ControlNet pipeline with random weights and the real CLIP tokenizer."""
    from diffusers import StableDiffusionControlNetPipeline

    from cgaug.models.tiny import clip_tokenizer

    return StableDiffusionControlNetPipeline(
        **random_components(device, dtype, seed, family), tokenizer=clip_tokenizer(), safety_checker=None,
        feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )


def count_module_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["COMPONENT_FILES", "component_config", "random_components", "random_pipeline"]
