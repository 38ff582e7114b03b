"""read_records: real image and tabular tables, in every supported encoding, into Records."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.errors import InputError
from connectors.image_codecs import encode_images
from connectors.images import encode_png
from connectors.table_records import read_records

N = 300
STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@pytest.fixture
def fm(fmnist) -> dict:
    """300 real Fashion-MNIST records with ids, label names and contributors."""
    names = [str(c) for c in fmnist["class_names"]]
    y = fmnist["y_train"][:N].astype(np.int64)
    return {
        "x": fmnist["x_train"][:N, None], "y": y, "names": names,
        "meta": pl.DataFrame({
            "id": [f"fm-{i}" for i in range(N)],
            "label": [names[v] for v in y],
            "worker": [f"worker-{i % 7}" for i in range(N)],
        }),
    }


def _image_table(fm: dict, encoding: str, folder) -> pl.DataFrame | pa.Table:
    x, meta = fm["x"], fm["meta"]
    flat = x.reshape(N, -1)
    if encoding == "png":
        return meta.with_columns(pl.Series("image", encode_png(x)))
    if encoding == "jpeg":
        return meta.with_columns(pl.Series("image", encode_images(x, "JPEG", quality=95)))
    if encoding == "struct-bytes":
        rows = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encode_png(x))]
        return meta.to_arrow().append_column("image", pa.array(rows, STRUCT))
    if encoding == "struct-path":
        (folder / "files").mkdir()
        for i, blob in enumerate(encode_png(x)):
            (folder / "files" / f"{i}.png").write_bytes(blob)
        rows = [{"bytes": None, "path": f"files/{i}.png"} for i in range(N)]
        return meta.to_arrow().append_column("image", pa.array(rows, STRUCT))
    if encoding == "nested-array":
        return meta.with_columns(pl.Series("image", x[:, 0]))
    if encoding == "nested-list":
        return meta.to_arrow().append_column("image", pa.array([img.tolist() for img in x[:, 0]]))
    if encoding == "flat-fixed":
        return meta.to_arrow().append_column(
            "image", pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), 784))
    if encoding == "flat-list-int64":
        return meta.to_arrow().append_column(
            "image", pa.array(list(flat.astype(np.int64)), pa.list_(pa.int64())))
    raise ValueError(encoding)


def _write(table: pl.DataFrame | pa.Table, path) -> None:
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    if path.suffix == ".csv":
        pl.from_arrow(table).write_csv(path)
    else:
        pq.write_table(table, path)


def _check(records, fm, exact: bool = True) -> None:
    assert records.modality == "image" and records.features.shape == (N, 1, 28, 28)
    if exact:
        np.testing.assert_array_equal(records.features, fm["x"])
    else:
        assert np.abs(records.features.astype(int) - fm["x"]).mean() < 4
    assert records.class_names == fm["names"]
    np.testing.assert_array_equal(records.hard_labels, fm["y"])
    assert records.ids.tolist() == fm["meta"]["id"].to_list()
    assert records.contributors.tolist() == fm["meta"]["worker"].to_list()
    assert not records.trusted.any() and records.feature_names == []


@pytest.mark.parametrize("encoding", [
    "png", "jpeg", "struct-bytes", "struct-path", "nested-array", "nested-list", "flat-fixed",
    "flat-list-int64",
])
@pytest.mark.parametrize("named", [True, False], ids=["image=named", "image=inferred"])
def test_every_image_encoding_reads_back(tmp_path, fm, encoding, named):
    path = tmp_path / "collected.parquet"
    _write(_image_table(fm, encoding, tmp_path), path)
    records = read_records(path, label="label", id="id", contributor="worker",
                           image="image" if named else None, class_names=fm["names"],
                           batch_rows=128)  # several batches
    _check(records, fm, exact=encoding != "jpeg")


@pytest.mark.parametrize("naming", ["pixel{}", "{}x{}"])
def test_pixel_columns_in_csv(tmp_path, fm, naming):
    flat = fm["x"].reshape(N, -1)
    names = ([naming.format(i) for i in range(784)] if naming == "pixel{}" else
             [naming.format(r, c) for r in range(1, 29) for c in range(1, 29)])
    table = fm["meta"].with_columns(pl.Series(n, flat[:, i]) for i, n in enumerate(names))
    path = tmp_path / "collected.csv"
    table.write_csv(path)
    _check(read_records(path, label="label", id="id", contributor="worker",
                        class_names=fm["names"]), fm)
    if naming == "pixel{}":
        _check(read_records(path, label="label", id="id", contributor="worker", image="pixel*",
                            class_names=fm["names"]), fm)


def test_json_pixel_lists_in_csv(tmp_path, fm):
    table = fm["meta"].with_columns(
        pl.Series("image", [str(img.reshape(-1).tolist()) for img in fm["x"]]))
    table.write_csv(tmp_path / "collected.csv")
    _check(read_records(tmp_path / "collected.csv", label="label", id="id", contributor="worker",
                        image="image", class_names=fm["names"]), fm)


def test_rgb_cifar_png_and_nested(tmp_path, cifar10):
    x = np.ascontiguousarray(cifar10["x_train"][::33][:N])
    chw = x.transpose(0, 3, 1, 2)
    y = cifar10["y_train"][::33][:N].astype(np.int64)
    names = [str(c) for c in cifar10["class_names"]]
    for image in (pl.Series("image", encode_png(chw)), pl.Series("image", x)):
        pl.DataFrame({"label": y}).with_columns(image).write_parquet(tmp_path / "c.parquet")
        records = read_records(tmp_path / "c.parquet", label="label", class_names=names)
        assert records.features.shape == (N, 3, 32, 32)
        np.testing.assert_array_equal(records.features, chw)
        np.testing.assert_array_equal(records.hard_labels, y)
        assert records.contributors is None


def test_trusted_column_and_trusted_flag(tmp_path, fm):
    table = _image_table(fm, "png", tmp_path).with_columns(
        (pl.int_range(N) < 50).alias("vetted"))
    table.write_parquet(tmp_path / "all.parquet")
    records = read_records(tmp_path / "all.parquet", label="label", trusted_column="vetted")
    assert records.trusted.sum() == 50 and records.trusted[:50].all()
    records = read_records(tmp_path / "all.parquet", label="label", image="image", trusted=True)
    assert records.trusted.all()
    table.with_columns(pl.col("vetted").cast(pl.Int8) * 2).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet, row 0, column 'vetted': trusted flag"):
        read_records(tmp_path / "bad.parquet", label="label", trusted_column="vetted")


def test_content_ids_are_stable_unique_and_order_free(tmp_path, fm):
    table = _image_table(fm, "flat-fixed", tmp_path)
    pq.write_table(table, tmp_path / "a.parquet")
    first = read_records(tmp_path / "a.parquet", label="label", contributor="worker")
    again = read_records(tmp_path / "a.parquet", label="label", contributor="worker")
    assert first.ids.tolist() == again.ids.tolist()
    assert len(set(first.ids)) == N and all(len(i) == 16 for i in first.ids)
    order = np.random.default_rng(1).permutation(N)
    pq.write_table(table.take(order), tmp_path / "shuffled.parquet")
    shuffled = read_records(tmp_path / "shuffled.parquet", label="label", contributor="worker")
    assert shuffled.ids.tolist() == first.ids[order].tolist()
    # An exact copy of a record is legitimate: it gets a suffixed id instead of an error.
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), tmp_path / "dup.parquet")
    dup = read_records(tmp_path / "dup.parquet", label="label", contributor="worker")
    assert dup.ids[-1] == f"{dup.ids[0]}-2"


def test_tabular_real_data(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn bundles breast_cancer")
    cancer = datasets.load_breast_cancer()
    names = [str(n) for n in cancer.feature_names]
    table = pl.DataFrame(cancer.data, schema=names).with_columns(
        pl.Series("diagnosis", np.asarray(cancer.target_names)[cancer.target]),
        pl.Series("patient", [f"p{i}" for i in range(len(cancer.target))]),
        pl.Series("note", ["free text"] * len(cancer.target)),  # non-numeric: ignored
    )
    for suffix in (".parquet", ".csv"):
        path = tmp_path / f"cancer{suffix}"
        table.write_parquet(path) if suffix == ".parquet" else table.write_csv(path)
        records = read_records(path, label="diagnosis", id="patient")
        assert records.modality == "tabular" and records.feature_names == names
        assert records.features.dtype == np.float32 and records.features.shape == (569, 30)
        np.testing.assert_allclose(records.features, cancer.data.astype(np.float32), rtol=1e-6)
        assert records.class_names == ["benign", "malignant"]
        chosen = read_records(path, label="diagnosis", features=names[:3])
        assert chosen.feature_names == names[:3] and chosen.features.shape == (569, 3)
    bad = table.with_columns(
        pl.when(pl.int_range(569) == 40).then(float("nan")).otherwise(pl.col("mean area"))
        .alias("mean area"))
    bad.write_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match=r"nan.parquet, row 40, column 'mean area': feature value "
                                         r"nan is not a finite number"):
        read_records(tmp_path / "nan.parquet", label="diagnosis", id="patient")
    bad.with_columns(pl.col("mean area").fill_nan(float("inf"))).write_csv(tmp_path / "inf.csv")
    with pytest.raises(InputError, match=r"inf.csv, row 40, column 'mean area': .*inf"):
        read_records(tmp_path / "inf.csv", label="diagnosis")
    bad.with_columns(pl.col("mean area").fill_nan(None)).write_parquet(tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"null.parquet, row 40, column 'mean area': missing"):
        read_records(tmp_path / "null.parquet", label="diagnosis")


def test_tabular_list_feature_column(tmp_path, fm):
    embedding = fm["x"].reshape(N, -1)[:, :8].astype(np.float32) / 255
    fm["meta"].with_columns(pl.Series("emb", embedding)).write_parquet(tmp_path / "e.parquet")
    records = read_records(tmp_path / "e.parquet", label="label", features=["emb"])
    assert records.feature_names == [f"emb[{i}]" for i in range(8)]
    np.testing.assert_array_equal(records.features, embedding)


def test_errors_are_located_in_the_right_shard(tmp_path, fm):
    """A 300-row source split in 3 shards: row 250 overall is row 50 of the third shard."""
    table = _image_table(fm, "png", tmp_path)
    shards = tmp_path / "shards"
    shards.mkdir()

    def write(frame):
        for k in range(3):
            frame[100 * k:100 * (k + 1)].write_parquet(shards / f"part-{k}.parquet")

    write(table.with_columns(pl.when(pl.int_range(N) == 250).then(pl.lit("Hat"))
                             .otherwise(pl.col("label")).alias("label")))
    with pytest.raises(InputError, match=r"part-2.parquet, row 50, column 'label': unknown label "
                                         r"'Hat' \(known: 'T-shirt/top'"):
        read_records(shards, label="label", class_names=fm["names"])
    blobs = encode_png(fm["x"])
    blobs[250] = blobs[250][:30]
    write(table.with_columns(pl.Series("image", blobs)))
    with pytest.raises(InputError, match=r"part-2.parquet, row 50, column 'image': cannot decode"):
        read_records(shards, label="label", batch_rows=64)
    write(table.with_columns(pl.when(pl.int_range(N) == 250).then(pl.lit("fm-20"))
                             .otherwise(pl.col("id")).alias("id")))
    with pytest.raises(InputError, match=r"part-2.parquet, row 50, column 'id': duplicate id "
                                         r"'fm-20', also in .*part-0.parquet row 20"):
        read_records(shards, label="label", id="id")


def test_column_problems(tmp_path, fm):
    table = _image_table(fm, "png", tmp_path)
    table.write_parquet(tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"a.parquet: missing column\(s\) 'klass'; available: "
                                         r"id, label, worker, image"):
        read_records(tmp_path / "a.parquet", label="klass")
    table.with_columns(pl.col("image").alias("thumb")).write_parquet(tmp_path / "two.parquet")
    with pytest.raises(InputError, match=r"several columns could hold images \(image, thumb\)"):
        read_records(tmp_path / "two.parquet", label="label")
    fm["meta"].write_parquet(tmp_path / "none.parquet")
    with pytest.raises(InputError, match="found no image or numeric feature columns"):
        read_records(tmp_path / "none.parquet", label="label", id="id", contributor="worker")
