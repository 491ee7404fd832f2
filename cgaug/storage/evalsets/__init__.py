"""Evaluation datasets: the anomaly and domain-shift benchmarks of the paper, read in their real layouts.

`open_dataset(kind, root, ...)` returns an `EvalDataset`; its `samples()`
lists paths (cheap, picklable) and `read(sample)` decodes one frame into an
`EvalItem` with the OOD map (0 / 1 / 255) and train ids where the dataset has
them. Every format's layout and label values are documented in its module
(`anomaly`, `shift`) and in research/metrics.md.
"""

from __future__ import annotations

from cgaug.storage.evalsets.anomaly import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SmiycAnomalyTrack,
    SmiycObstacleTrack,
)
from cgaug.storage.evalsets.base import EvalDataError, EvalDataset, EvalItem, EvalSample
from cgaug.storage.evalsets.shift import AcdcPoc, CityscapesVal, Muad, reconstruct

DATASETS: dict[str, type[EvalDataset]] = {
    cls.kind: cls for cls in (RoadAnomaly, SmiycAnomalyTrack, SmiycObstacleTrack, FishyscapesLostAndFound,
                              FishyscapesStatic, AcdcPoc, Muad, CityscapesVal)
}
DATASET_KINDS: tuple[str, ...] = tuple(DATASETS)

__all__ = ["DATASETS", "DATASET_KINDS", "EvalDataError", "EvalDataset", "EvalItem", "EvalSample", "open_dataset",
           "parse_dataset_spec", "reconstruct"]


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """`KIND=DIR` -> (kind, dir), with a clear error for an unknown kind or a missing '='."""
    kind, sep, root = spec.partition("=")
    kind = kind.strip()
    if not sep or not root.strip():
        raise ValueError(f"dataset {spec!r}: expected KIND=DIR with KIND one of {', '.join(DATASET_KINDS)}")
    if kind not in DATASETS:
        raise ValueError(f"dataset {spec!r}: unknown kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    return kind, root.strip()


def open_dataset(kind: str, root: str, *, acdc_root: str | None = None, acdc_void: str = "poc",
                 ro21_subset: str = "official") -> EvalDataset:
    """The dataset of `kind` at `root`; options apply to the kinds named in them and are ignored by others.

    Args:
        acdc_root: ACDC originals for acdc_poc (folder holding rgb_anon/ or rgb_anon_trainvaltest/);
            default: `root` itself (both archives unpacked into one folder).
        acdc_void: acdc_poc void convention, "poc" (default) or "multishiftseg".
        ro21_subset: smiyc_ro21 frames, "official" (the benchmark's 30) or "all" labelled frames.
    """
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    if kind == AcdcPoc.kind:
        return AcdcPoc(root, acdc_root=acdc_root, void=acdc_void)  # type: ignore[arg-type]
    if kind == SmiycObstacleTrack.kind:
        return SmiycObstacleTrack(root, subset=ro21_subset)  # type: ignore[arg-type]
    return DATASETS[kind](root)
