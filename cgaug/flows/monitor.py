"""What the Prefect UI shows of a run: quality artifacts, the run summary, progress and events.

Thin wrappers: the content comes from `cgaug.tasks.generation.quality` (pure) and the
per-shard reports next to the data; this module only hands it to Prefect.

- table artifact ``cgaug-shard-quality``: one version per produced shard
  (a verdict line first, then drops by reason, score quantiles per gate, OOD
  classes, domains, timing);
- markdown artifact ``cgaug-shard-preview``: a few rendered samples of the
  shard (image | conditioning map | labels with the OOD outline), inline;
- markdown artifact ``cgaug-run-summary``: one version per parent run;
- progress artifact of the parent run (shards finished / to do);
- events ``cgaug.shard.completed`` and, when acceptance is below the floor,
  ``cgaug.shard.low-quality`` (deploy/automations.yaml reacts to those).
"""

from __future__ import annotations

import hashlib
from uuid import UUID

from cgaug.storage.fs import open_root
from cgaug.storage.layout import shard_label
from cgaug.storage.reports import ShardQuality, read_report
from cgaug.storage.schema import VERDICT_ACCEPTED
from cgaug.tasks.generation.quality import is_low_quality, quality_table

SHARD_QUALITY_KEY = "cgaug-shard-quality"
SHARD_PREVIEW_KEY = "cgaug-shard-preview"
RUN_SUMMARY_KEY = "cgaug-run-summary"
PROGRESS_KEY = "cgaug-progress"
EVENT_COMPLETED = "cgaug.shard.completed"
EVENT_LOW_QUALITY = "cgaug.shard.low-quality"


def dataset_id(out: str) -> str:
    """A short stable id of an output root, for event resource ids (URIs are too long and leak paths)."""
    return hashlib.sha256(open_root(out, create=False).uri().encode()).hexdigest()[:12]


def shard_resource(out: str, shard: int) -> dict[str, str]:
    return {"prefect.resource.id": f"cgaug.shard.{dataset_id(out)}.{shard:05d}",
            "prefect.resource.name": shard_label(shard), "cgaug.out": str(out)}


def publish_shard_quality(out: str, shard: int, floor: float | None) -> UUID:
    """The quality table of a shard this run produced, from its report."""
    from prefect.artifacts import create_table_artifact

    quality, producer = read_report(open_root(out, create=False), shard)
    flag = "LOW QUALITY" if is_low_quality(quality, floor) else "ok"
    where = producer.get("flow_run_name") or producer.get("host", "")
    return create_table_artifact(
        quality_table(quality, floor), key=SHARD_QUALITY_KEY,
        description=f"**{shard_label(quality.shard)}** of `{out}`: {flag}, {quality.stats.rows} rows"
                    + (f", produced by {where}" if where else ""))


def publish_shard_preview(out: str, shard: int) -> UUID:
    """A few rendered samples of the shard (a rejected one first) as a markdown artifact with inline images."""
    from prefect.artifacts import create_markdown_artifact

    from cgaug.storage.shards import read_shard_rows
    from cgaug.tasks.reporting.previews import pick_preview_rows, shard_preview_markdown

    root = open_root(out, create=False)
    verdicts, _ = read_shard_rows(root, shard)
    _, rows = read_shard_rows(root, shard, pick_preview_rows(verdicts))
    label = shard_label(shard)
    return create_markdown_artifact(shard_preview_markdown(rows, f"{label}: samples"),
                                    key=SHARD_PREVIEW_KEY, description=f"samples of {label} of `{out}`")


def emit_shard_events(out: str, quality: ShardQuality, floor: float | None) -> list[str]:
    """`cgaug.shard.completed`, plus `cgaug.shard.low-quality` when below the floor; the names emitted."""
    from prefect.events import emit_event

    stats = quality.stats
    payload = {"out": str(out), "shard": quality.shard, "rows": stats.rows,
               "accepted": stats.verdicts.get(VERDICT_ACCEPTED, 0), "acceptance_rate": quality.quality,
               "quality": quality.quality, "seconds": stats.seconds}
    names = [EVENT_COMPLETED]
    emit_event(EVENT_COMPLETED, resource=shard_resource(out, quality.shard), payload=payload)
    if is_low_quality(quality, floor):
        emit_event(EVENT_LOW_QUALITY, resource=shard_resource(out, quality.shard), payload=payload | {"floor": floor})
        names.append(EVENT_LOW_QUALITY)
    return names


class Progress:
    """The parent run's progress artifact (updated in place, not versioned)."""

    def __init__(self, total: int, out: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total, self.done, self.out = max(total, 0), 0, out
        self.id = create_progress_artifact(self._percent(), key=PROGRESS_KEY, description=self._text())

    def _percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total

    def _text(self) -> str:
        return f"{self.done}/{self.total} shards finished for `{self.out}`"

    def advance(self, n: int = 1) -> None:
        from prefect.artifacts import update_progress_artifact

        self.done = min(self.done + n, self.total)
        update_progress_artifact(self.id, self._percent(), description=self._text())


def publish_run_summary(markdown: str, out: str) -> UUID:
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(markdown, key=RUN_SUMMARY_KEY, description=f"cgaug run on `{out}`")
