"""Where a model comes from and how it is loaded once per process: the one resolver and cache.

Every network the project loads (the diffusion pipeline and its ControlNets, SAM, CLIP,
segmenters) is named in the config by a Hugging Face hub id or a local directory. This module
decides which one a name is, checks a local directory before a library sees it, runs the
library's own `from_pretrained` quietly, and turns a hub miss (offline, not in the cache) into a
`ModelNotFound` that names the config key and says how to provide the model offline. Loaded
models are cached per process (`cached`), so a worker loads its weights once and reuses them
across batches and shards.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TINY = "tiny"
"""The config value that names the small random-weight stand-in of a model (tests, demo)."""

_NO_DOWNLOAD_HINTS = {  # by config section: how to run without the model at all
    "generator": "(`generator.model: tiny` needs no download.)",
    "filters": "(`--filters tiny` needs no download; `--filters none` turns filtering off.)",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"; anything else is a path

_lock = threading.RLock()  # re-entrant: a loader may itself use `cached` (a pipeline per scheduler)
_cache: dict[Hashable, Any] = {}


class ModelNotFound(LookupError):
    """A model that is neither a local directory nor available from the Hugging Face cache (or hub)."""


def is_hub_id(name: str) -> bool:
    """True when `name` reads as a hub id (``name`` or ``org/name``) rather than a path."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~"))


def locate(name: str, field: str, *, marker: str = "config.json",
           what: str = "model directory") -> tuple[str, bool]:
    """(reference to hand to `from_pretrained`, whether it is local) for the config value `name`.

    A path that exists must hold `marker` (so a typo'd or half-copied directory fails here, not
    deep inside a library); a name that does not exist must read as a hub id.

    Raises:
        ModelNotFound: neither, naming `field`.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise ModelNotFound(not_found_message(
                name, field, f"{path} exists but holds no {marker}, so it is not a saved {what}"))
        return str(path), True
    if not is_hub_id(name):
        raise ModelNotFound(not_found_message(name, field, f"no such directory: {path}"))
    return name, False


def from_pretrained(load: Callable[[str, bool], T], name: str, field: str, *, marker: str = "config.json",
                    what: str = "model directory", variant: str | None = None) -> T:
    """`load(reference, is_local)` for the config value `name`, with the library's progress bars off.

    `load` calls the library's `from_pretrained` (passing `local_files_only`, revisions... as it
    needs them). A hub miss (the OSError huggingface_hub raises offline or for an unknown id) and
    a missing weight `variant` become `ModelNotFound` naming `field`; errors reading a local
    directory propagate unchanged.

    Raises:
        ModelNotFound: see `locate`, or the model is not in the cache and cannot be downloaded.
    """
    ref, is_local = locate(name, field, marker=marker, what=what)
    with quiet_progress_bars():
        try:
            return load(ref, is_local)
        except ValueError as exc:  # diffusers: "You are trying to load the model files of the `variant=...`"
            if variant is None or "variant" not in str(exc):
                raise
            reason = f"it has no weight files of variant {variant!r} ({' '.join(str(exc).split())})"
            raise ModelNotFound(not_found_message(name, field, reason, variant=variant)) from exc
        except OSError as exc:  # hub misses: LocalEntryNotFoundError, "does not appear to have a file named ..."
            if is_local:
                raise
            reason = f"not in the Hugging Face cache and not downloadable ({' '.join(str(exc).split())})"
            raise ModelNotFound(not_found_message(name, field, reason, variant=variant)) from exc


def not_found_message(name: str, field: str, reason: str, *, variant: str | None = None) -> str:
    """One line: what was not found under which config key, why, the two ways to provide it offline,
    and, for the generator and filter sections, how to run without it (the tiny models)."""
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    offline = " HF_HUB_OFFLINE is set, so nothing is downloaded." if os.environ.get("HF_HUB_OFFLINE") else ""
    section = field.split(".", 1)[0]
    hint = _NO_DOWNLOAD_HINTS.get(section)
    variant_hint = (f" (with {section}.variant {variant!r}: its *.{variant}.* weight files, or unset "
                    f"{section}.variant to use the default ones)") if variant else ""
    example = f" (e.g. `hf download {name}`)" if is_hub_id(name) else ""
    return (
        f"{field} {name!r} was not found: {reason}.{offline} To provide it, either download "
        f"{name!r}{variant_hint} into the Hugging Face cache (HF_HOME, here {hf_home}) on a machine with "
        f"network access{example} and copy the cache over, or set the config key `{field}` to a local "
        f"directory saved with save_pretrained.{' ' + hint if hint else ''}"
    )


def cached(key: Hashable, load: Callable[[], T]) -> T:
    """The object cached under `key`, loaded by `load()` on the first call in this process.

    Keys start with a kind ("pipeline", "sam", "segmenter", ...) and hold everything that changes
    the loaded object (reference, revision, dtype, device...). Loads are serialised: two threads
    asking for the same model load it once.
    """
    with _lock:
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing GPU memory between runs)."""
    with _lock:
        _cache.clear()


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """No tqdm bars from diffusers/transformers/huggingface_hub while loading or saving models.

    Their bars go to stderr and clutter CLI output and flow logs; the libraries only offer
    process-wide switches, so the previous state is restored afterwards.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            diffusers_logging.enable_progress_bar()
        if was[1]:
            transformers_logging.enable_progress_bar()
