"""scan_table / source_files: files, globs, shard folders, hive folders and lists of them."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest

from connectors.errors import InputError
from connectors.tables import file_sha256, locate_row, scan_table, source_files


@pytest.fixture
def table(fmnist) -> pl.DataFrame:
    """300 real Fashion-MNIST records: id, label name and mean brightness."""
    x, y = fmnist["x_train"][:300], fmnist["y_train"][:300]
    return pl.DataFrame({
        "id": [f"f{i}" for i in range(300)],
        "label": [str(fmnist["class_names"][v]) for v in y],
        "brightness": x.reshape(300, -1).mean(axis=1),
    })


def _write_shards(frame: pl.DataFrame, folder, suffix: str, parts: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, piece in enumerate(np.array_split(np.arange(frame.height), parts)):
        chunk = frame[int(piece[0]):int(piece[-1]) + 1]
        path = folder / f"part-{index}{suffix}"
        if suffix == ".parquet":
            chunk.write_parquet(path)
        else:
            chunk.write_csv(path, separator="\t" if suffix == ".tsv" else ",")


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".csv", ".tsv"])
def test_single_file_in_every_format(tmp_path, table, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix in (".parquet", ".pq"):
        table.write_parquet(path)
    else:
        table.write_csv(path, separator="\t" if suffix == ".tsv" else ",")
    frame = scan_table(path)
    assert isinstance(frame, pl.LazyFrame)
    assert frame.collect().equals(table)
    assert source_files(str(path)) == [path]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_folder_glob_and_list_read_shards_in_natural_order(tmp_path, table, suffix):
    # 12 shards: part-10 must come after part-9, not after part-1.
    _write_shards(table, tmp_path / "shards", suffix, parts=12)
    (tmp_path / "shards" / "_SUCCESS").write_text("")
    (tmp_path / "shards" / "README.md").write_text("ignored")
    files = source_files(tmp_path / "shards")
    assert [f.name for f in files] == [f"part-{i}{suffix}" for i in range(12)]
    for source in (tmp_path / "shards", str(tmp_path / "shards" / f"*{suffix}"), files):
        assert scan_table(source).collect().equals(table)
    assert scan_table(tmp_path / "shards").select("label").collect().height == 300


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_hive_partitioned_folder_adds_partition_columns(tmp_path, table, suffix):
    for split, piece in (("train", table[:200]), ("test", table[200:])):
        _write_shards(piece, tmp_path / "hive" / f"split={split}" / "year=2024", suffix, parts=2)
    frame = scan_table(tmp_path / "hive").collect()
    assert frame.height == 300
    assert sorted(frame.columns) == ["brightness", "id", "label", "split", "year"]
    assert frame.filter(pl.col("split") == "train").height == 200
    assert frame.get_column("year").cast(pl.Int64).unique().to_list() == [2024]


def test_errors_name_the_path(tmp_path, table):
    with pytest.raises(InputError, match="not found") as missing:
        scan_table(tmp_path / "nope.parquet")
    assert str(tmp_path / "nope.parquet") in str(missing.value)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"data\.xlsx: unknown table suffix '\.xlsx'"):
        scan_table(tmp_path / "data.xlsx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: folder holds no table files"):
        scan_table(tmp_path / "empty")
    with pytest.raises(InputError, match="no files match"):
        scan_table(str(tmp_path / "empty" / "*.parquet"))
    _write_shards(table, tmp_path / "mixed", ".parquet", parts=2)
    table.write_csv(tmp_path / "mixed" / "extra.csv")
    with pytest.raises(InputError, match=r"mixed: mixed table formats \(csv, parquet\)"):
        scan_table(tmp_path / "mixed")
    table.write_parquet(tmp_path / "once.parquet")
    with pytest.raises(InputError, match="named twice"):
        scan_table([tmp_path / "once.parquet", str(tmp_path / "once.parquet")])
    with pytest.raises(InputError, match="empty list"):
        scan_table([])


def test_list_of_sources_combines_by_column_name(tmp_path, table):
    table[:100].write_parquet(tmp_path / "a.parquet")
    table[100:].select("label", "id", "brightness").write_parquet(tmp_path / "b.parquet")
    frame = scan_table([tmp_path / "a.parquet", tmp_path / "b.parquet"]).collect()
    assert frame.select(table.columns).equals(table)


def test_locate_row_maps_back_to_the_file(tmp_path, table):
    _write_shards(table, tmp_path / "shards", ".csv", parts=3)  # 100 rows each
    assert locate_row(tmp_path / "shards", 0) == (tmp_path / "shards" / "part-0.csv", 0)
    assert locate_row(tmp_path / "shards", 250) == (tmp_path / "shards" / "part-2.csv", 50)


def test_file_sha256_matches_hashlib(tmp_path, table):
    path = tmp_path / "data.parquet"
    table.write_parquet(path)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
