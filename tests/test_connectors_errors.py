"""InputError: one-line messages that say where the problem is."""

from __future__ import annotations

import pickle

from connectors.errors import InputError


def test_message_names_file_row_and_column_on_one_line():
    error = InputError("probability vector sums to 0.83, not 1",
                       path="collected.parquet", row=17, column="label")
    assert str(error) == ("collected.parquet, row 17, column 'label': "
                          "probability vector sums to 0.83, not 1")
    assert (error.path, error.row, error.column) == ("collected.parquet", 17, "label")


def test_partial_locations_and_multiline_messages():
    assert str(InputError("not found", path="a.csv")) == "a.csv: not found"
    assert str(InputError("bad", column="x")) == "column 'x': bad"
    assert str(InputError("plain")) == "plain"
    assert "\n" not in str(InputError("line one\nline two", row=0))


def test_located_fills_in_coordinates_and_pickling_keeps_them():
    error = InputError("null", row=3, column="image").located(path="b.parquet", row=1)
    assert str(error) == "b.parquet, row 1, column 'image': null"
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.row == 1
