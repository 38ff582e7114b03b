"""write_table / read_table: Parquet, CSV and JSON lines, atomically, or to standard output."""

from __future__ import annotations

import json

import polars as pl
import pytest

from connectors.errors import InputError
from connectors.reports import read_table, write_table


@pytest.fixture
def scores(fmnist) -> pl.DataFrame:
    """A small report about 50 real records: id, class, a score and a probability vector."""
    x, y = fmnist["x_train"][:50], fmnist["y_train"][:50]
    return pl.DataFrame({
        "id": [f"fm-{i}" for i in range(50)],
        "label": [str(fmnist["class_names"][v]) for v in y],
        "brightness": x.reshape(50, -1).mean(axis=1) / 255,
        "probs": [[0.25, 0.75] if i % 2 else [1.0, 0.0] for i in range(50)],
        "flagged": [i % 7 == 0 for i in range(50)],
    })


@pytest.mark.parametrize("name", ["r.parquet", "r.pq", "r.jsonl", "r.ndjson", "r.json"])
def test_typed_formats_round_trip(tmp_path, scores, name):
    write_table(scores, tmp_path / name)
    assert read_table(tmp_path / name).equals(scores)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_csv_stores_lists_as_json(tmp_path, scores):
    write_table(scores, tmp_path / "r.csv")
    back = read_table(tmp_path / "r.csv")
    assert back.drop("probs").equals(scores.drop("probs"))
    assert [json.loads(v) for v in back["probs"]] == scores["probs"].to_list()


def test_explicit_format_and_stdout(tmp_path, scores, capsys):
    write_table(scores, tmp_path / "report.txt", fmt="csv")
    assert read_table(tmp_path / "report.txt", fmt="csv").height == 50
    write_table(scores.head(3), "-")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["fm-0", "fm-1", "fm-2"]
    write_table(scores.head(2), "-", fmt="csv")
    assert capsys.readouterr().out.splitlines()[0] == "id,label,brightness,probs,flagged"


def test_errors(tmp_path, scores):
    with pytest.raises(InputError, match=r"r.xlsx: cannot tell the table format from suffix"):
        write_table(scores, tmp_path / "r.xlsx")
    with pytest.raises(InputError, match="unknown table format 'xml'"):
        write_table(scores, "-", fmt="xml")
    with pytest.raises(ValueError, match="'blob' holds bytes, which CSV cannot store"):
        write_table(pl.DataFrame({"blob": [b"\x89PNG"]}), tmp_path / "blobs.csv")
    with pytest.raises(InputError, match=r"missing.parquet: not found"):
        read_table(tmp_path / "missing.parquet")
    assert list(tmp_path.iterdir()) == []
