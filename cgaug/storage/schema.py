"""The shard row schema: one explicit pyarrow schema, never inferred.

Metadata lives in columns (never in file names). Blob columns hold PNG bytes;
`index.parquet` carries every other column plus the shard file name.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2
"""2: `scores` is a list of {name, score} structs (1: a map, which Hugging Face `datasets` cannot load)."""
LEGACY_VERSIONS = (1,)
"""Versions readers still accept: their tables are upgraded on read (`upgrade_table`), never rewritten."""

VERDICT_UNFILTERED = "unfiltered"  # generated, no quality filter has run yet
VERDICT_SKIPPED = "skipped"  # bad input or no valid composition; reasons say why, no blobs
VERDICT_ACCEPTED = "accepted"  # passed the quality filter
VERDICT_REJECTED = "rejected"  # failed the quality filter; blobs optional, reasons say why
COMPLETE_VERDICTS = (VERDICT_UNFILTERED, VERDICT_ACCEPTED)
"""Verdicts whose rows must carry the image, label, conditioning map and OOD mask (others may drop them)."""

OBJECT_TYPE = pa.struct([
    ("class_name", pa.string()),
    ("ade_class", pa.string()),
    ("object_id", pa.string()),
    ("bank_source_id", pa.string()),
    ("x0", pa.int32()),
    ("y0", pa.int32()),
    ("x1", pa.int32()),
    ("y1", pa.int32()),
    ("scale", pa.float32()),
    ("area", pa.int64()),
])

SCORE_TYPE = pa.struct([
    ("name", pa.string()),  # the gate's score key, e.g. "sam_iou"
    ("score", pa.float64()),
])

GATE_TYPE = pa.struct([
    ("attempt", pa.int32()),
    ("name", pa.string()),  # the score key, e.g. "sam_iou" (cgaug.tasks.generation.gates)
    ("score", pa.float64()),
    ("threshold", pa.float64()),  # null: the gate only records its score
    ("passed", pa.bool_()),
    ("reason", pa.string()),  # reason code when failed, e.g. "sam_iou_low"
])

BLOB_COLUMNS = ("image_png", "label_png", "cond_png", "ood_mask_png", "noise_mask_png")

SHARD_SCHEMA = pa.schema([
    # identity
    ("sample_id", pa.string()),
    ("source_id", pa.string()),
    ("city", pa.string()),
    ("split", pa.string()),
    ("variant", pa.int32()),
    ("attempt", pa.int32()),  # the generation attempt whose image the row holds (0 = first)
    ("attempts", pa.int32()),  # generations made for this sample (1 unless the filter asked for more)
    ("seed", pa.int64()),  # seed of the composition and prompt (the plan's, unless re-composed)
    ("image_seed", pa.int64()),  # seed the generator was given for the stored image
    ("shard", pa.int32()),
    # outcome
    ("verdict", pa.string()),
    ("reasons", pa.list_(pa.string())),
    ("detail", pa.string()),
    ("scores", pa.list_(SCORE_TYPE)),  # the stored attempt's gate scores (rows may give a {name: score} dict)
    ("gates", pa.list_(GATE_TYPE)),  # every gate of every attempt: the audit trail of the filter
    # prompt, each attribute in its own column
    ("prompt", pa.string()),
    ("negative_prompt", pa.string()),
    ("prompt_domain", pa.bool_()),
    ("weather", pa.string()),
    ("time_of_day", pa.string()),
    ("place", pa.string()),
    ("objects_phrase", pa.string()),
    # composition
    ("objects", pa.list_(OBJECT_TYPE)),
    ("num_objects", pa.int32()),
    ("ood_area", pa.int64()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    # generator settings: everything needed to regenerate the sample
    ("generator_model", pa.string()),
    ("generator_controlnet", pa.string()),
    ("generator_revision", pa.string()),
    ("generator_variant", pa.string()),
    ("generator_controlnet_revision", pa.string()),
    ("scheduler", pa.string()),
    ("steps", pa.int32()),
    ("guidance_scale", pa.float32()),
    ("control_scale", pa.float32()),
    ("eta", pa.float32()),
    ("dtype", pa.string()),
    ("gen_height", pa.int32()),
    ("gen_width", pa.int32()),
    ("photo_control", pa.string()),  # second condition from the source photo: none | canny | lineart
    ("photo_controlnet", pa.string()),
    ("photo_controlnet_revision", pa.string()),
    ("photo_control_scale", pa.float32()),
    ("photo_control_params", pa.string()),  # JSON, e.g. {"canny_high": 200, "canny_low": 100}
    ("config_fingerprint", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    # blobs (PNG, lossless); null for skipped samples
    ("image_png", pa.binary()),
    ("label_png", pa.binary()),
    ("cond_png", pa.binary()),
    ("ood_mask_png", pa.binary()),
    ("noise_mask_png", pa.binary()),
], metadata={"cgaug.schema_version": str(SCHEMA_VERSION)})

INDEX_SCHEMA = pa.schema(
    [f for f in SHARD_SCHEMA if f.name not in BLOB_COLUMNS] + [pa.field("shard_file", pa.string())],
    metadata={"cgaug.schema_version": str(SCHEMA_VERSION)},
)


_LEGACY_SCORES = pa.map_(pa.string(), pa.float64())


def legacy_schema(schema: pa.Schema, version: int) -> pa.Schema:
    """`schema` as schema version `version` wrote it (for reading outputs of earlier releases)."""
    if version not in LEGACY_VERSIONS:
        raise ValueError(f"unknown legacy schema version {version}; known: {LEGACY_VERSIONS}")
    index = schema.get_field_index("scores")
    return schema.set(index, pa.field("scores", _LEGACY_SCORES)).with_metadata(
        {"cgaug.schema_version": str(version)})


def scores_column(scores: dict[str, float] | None) -> list[dict[str, float]] | None:
    """The stored form of a {gate: score} dict: name/score structs in the dict's order."""
    if scores is None or isinstance(scores, list):
        return scores
    return [{"name": name, "score": score} for name, score in scores.items()]


def scores_as_dict(value: object) -> dict[str, float]:
    """{gate: score} from a `scores` cell of any schema version (structs, map pairs, a dict, or null)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    return {(item["name"] if isinstance(item, dict) else item[0]): (item["score"] if isinstance(item, dict)
                                                                     else item[1]) for item in value}


def upgrade_table(table: pa.Table) -> pa.Table:
    """A table read from a version-1 shard or index with its `scores` column in today's form."""
    if "scores" not in table.column_names or not pa.types.is_map(table.schema.field("scores").type):
        return table
    column = pa.array([scores_column(scores_as_dict(v)) for v in table.column("scores").to_pylist()],
                      pa.list_(SCORE_TYPE))
    return table.set_column(table.column_names.index("scores"), "scores", column)


def empty_row() -> dict:
    """A row with every column present and null, to be filled by the producer."""
    return {name: None for name in SHARD_SCHEMA.names}
