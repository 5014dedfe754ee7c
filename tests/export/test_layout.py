"""The dataset format's declarations agree with each other and with the session formats."""

from __future__ import annotations

from capture import formats
from capture.export import layout
from capture.export.vocabulary import ACTION_NAMES


def test_dataset_events_schema_extends_the_session_events_schema() -> None:
    session = formats.arrow_schema_doc(formats.EVENTS_SCHEMA)["fields"]
    dataset = formats.arrow_schema_doc(layout.EVENTS_SCHEMA)["fields"]
    assert dataset[:len(session)] == session
    assert [f["name"] for f in dataset[len(session):]] == ["session_id", "episode_index",
                                                           "frame_index"]


def test_info_features_match_the_frames_schema_and_validate() -> None:
    info = layout.build_info(fps=30, width=64, height=48, total_episodes=1, total_frames=2,
                             total_tasks=1)
    formats.validate_json(info, layout.INFO_SCHEMA)
    schema = layout.frames_schema()
    features = {k: v for k, v in info["features"].items() if v["dtype"] != "video"}
    assert set(features) == set(schema.names)
    for name, spec in features.items():
        assert layout.arrow_type_matches(spec, schema.field(name).type), name
    for name, names in ACTION_NAMES.items():
        assert schema.field(name).type.list_size == len(names)


def test_file_numbering_rolls_into_the_next_chunk() -> None:
    assert layout.next_file(0, 0, 1000) == (0, 1)
    assert layout.next_file(0, 999, 1000) == (1, 0)
    assert layout.DATA_PATH.format(chunk_index=1, file_index=2) == "data/chunk-001/file-002.parquet"
