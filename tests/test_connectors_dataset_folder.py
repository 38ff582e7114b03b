"""The ingested dataset folder: Parquet shards + manifest.json, written atomically."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.dataset_folder import read_dataset, read_manifest, write_dataset
from connectors.errors import InputError
from sanitizer.records import Records, one_hot

N = 500


@pytest.fixture
def image_records(fmnist) -> Records:
    """500 real Fashion-MNIST records: 100 trusted, 40 with confidence (soft) labels."""
    y = fmnist["y_train"][:N].astype(np.int64)
    labels = one_hot(y, 10)
    labels[:40] = 0.6 * labels[:40] + 0.4 / 10  # still sums to 1
    contributors = np.array([f"w{i % 5}" if i % 11 else None for i in range(N)], dtype=object)
    return Records(
        features=fmnist["x_train"][:N, None], labels=labels,
        ids=np.array([f"fm-{i}" for i in range(N)], dtype=object),
        trusted=np.arange(N) >= 400, class_names=[str(c) for c in fmnist["class_names"]],
        modality="image", contributors=contributors,
    )


INPUTS = [
    {"path": "collected.parquet", "sha256": "ab" * 32, "rows": 400, "role": "collected"},
    {"path": "trusted.parquet", "sha256": "cd" * 32, "rows": 100, "role": "trusted"},
]


def _same(a: Records, b: Records) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.dtype == b.features.dtype
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.trusted, b.trusted)
    assert (a.contributors is None) == (b.contributors is None)
    if a.contributors is not None:
        assert a.contributors.tolist() == b.contributors.tolist()
    assert (a.class_names, a.modality, a.feature_names) == (b.class_names, b.modality,
                                                            b.feature_names)


def test_image_round_trip_shards_and_manifest(tmp_path, image_records):
    folder = tmp_path / "dataset"
    manifest = write_dataset(image_records, folder, tool_version="0.1.0", inputs=INPUTS,
                             extra={"attack": {"kind": "badnets"}}, rows_per_shard=200)
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no temp leftovers
    schema = pq.read_schema(folder / "part-00000.parquet")
    pixels, label = schema.field("pixels").type, schema.field("label").type
    assert pa.types.is_fixed_size_list(pixels) and pixels.list_size == 784
    assert pixels.value_type == pa.uint8()
    assert pa.types.is_list(label) and label.value_type == pa.float32()
    assert schema.names == ["id", "contributor", "trusted", "label", "pixels"]
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == manifest == read_manifest(folder)
    assert manifest["format_version"] == 1 and manifest["tool_version"] == "0.1.0"
    assert manifest["created"].endswith("+00:00")
    assert manifest["input_shape"] == [1, 28, 28] and manifest["modality"] == "image"
    assert manifest["attack"] == {"kind": "badnets"} and manifest["inputs"] == INPUTS
    counts = manifest["counts"]
    assert (counts["records"], counts["collected"], counts["trusted"], counts["soft_labels"]) == (
        500, 400, 100, 40)
    y = image_records.hard_labels
    assert counts["per_class_trusted"]["Bag"] == int((y[400:] == 8).sum())
    assert sum(counts["per_class_collected"].values()) == 400
    records, again = read_dataset(folder)
    assert again == manifest
    _same(records, image_records)


def test_tabular_round_trip_without_contributors(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn bundles breast_cancer")
    cancer = datasets.load_breast_cancer()
    records = Records(
        features=cancer.data.astype(np.float32), labels=one_hot(cancer.target, 2),
        ids=np.array([f"p{i}" for i in range(len(cancer.target))], dtype=object),
        trusted=np.zeros(len(cancer.target), bool), class_names=list(cancer.target_names),
        modality="tabular", feature_names=list(cancer.feature_names),
    )
    manifest = write_dataset(records, tmp_path / "ds", tool_version="0.1.0", inputs=[])
    assert manifest["input_shape"] == [30] and len(manifest["shards"]) == 1
    back, _ = read_dataset(tmp_path / "ds")
    _same(back, records)


def test_replaces_a_dataset_but_never_an_unrelated_folder(tmp_path, image_records):
    folder = tmp_path / "dataset"
    write_dataset(image_records, folder, tool_version="1", inputs=INPUTS)
    write_dataset(image_records.subset(np.arange(10)), folder, tool_version="2", inputs=[])
    assert read_manifest(folder)["counts"]["records"] == 10
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(FileExistsError, match="not a sanitize dataset folder"):
        write_dataset(image_records, precious, tool_version="1", inputs=[])
    assert (precious / "holiday.jpg").exists()


def test_failed_write_leaves_nothing(tmp_path, image_records):
    bad_inputs = [{"path": "x", "sha256": "0", "rows": 1, "role": "unknown"}]
    with pytest.raises(ValueError, match="role"):
        write_dataset(image_records, tmp_path / "ds", tool_version="1", inputs=bad_inputs)
    duplicated = image_records.subset(np.arange(10))
    duplicated.ids[5] = duplicated.ids[0]
    with pytest.raises(ValueError, match="unique"):
        write_dataset(duplicated, tmp_path / "ds", tool_version="1", inputs=[])
    with pytest.raises(ValueError, match="clash"):
        write_dataset(image_records, tmp_path / "ds", tool_version="1", inputs=[],
                      extra={"counts": 3})
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path, image_records):
    with pytest.raises(InputError, match=r"nothing: not a sanitize dataset folder \(manifest.json "
                                         r"missing"):
        read_dataset(tmp_path / "nothing")
    folder = tmp_path / "ds"
    write_dataset(image_records, folder, tool_version="1", inputs=[], rows_per_shard=200)
    (folder / "part-00001.parquet").unlink()
    with pytest.raises(InputError, match=r"part-00001.parquet: shard listed in the manifest is "
                                         r"missing"):
        read_dataset(folder)
    write_dataset(image_records, folder, tool_version="1", inputs=[], rows_per_shard=200)
    table = pq.read_table(folder / "part-00002.parquet")
    pq.write_table(table.slice(0, 50), folder / "part-00002.parquet")
    with pytest.raises(InputError, match=r"part-00002.parquet: shard has 50 rows, manifest says"):
        read_dataset(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["class_names"] = manifest["class_names"][:9]  # labels have 10 values
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pq.write_table(table, folder / "part-00002.parquet")
    with pytest.raises(InputError, match=r"part-00000.parquet, row 0, column 'label': list has 10 "
                                         r"values, expected 9"):
        read_dataset(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest is not valid JSON"):
        read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({"format_version": 7}))
    with pytest.raises(InputError, match="unsupported dataset format_version 7"):
        read_manifest(folder)
