"""parse_labels: class names, integers and probability vectors -> (N, K) float32 rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from connectors.errors import InputError
from connectors.labels import parse_labels


@pytest.fixture
def labels(fmnist) -> tuple[np.ndarray, list[str]]:
    """300 real Fashion-MNIST labels (integers 0..9) and the ten class names."""
    return fmnist["y_train"][:300].astype(np.int64), [str(c) for c in fmnist["class_names"]]


def test_class_name_strings_sorted_or_in_given_order(labels):
    y, names = labels
    strings = pa.array([names[v] for v in y])
    probs, found = parse_labels(strings)
    assert found == sorted(names)
    assert [found[k] for k in probs.argmax(axis=1)] == strings.to_pylist()
    probs, found = parse_labels(strings, class_names=names)
    assert found == names and probs.dtype == np.float32 and probs.shape == (300, 10)
    np.testing.assert_array_equal(probs.argmax(axis=1), y)
    np.testing.assert_array_equal(probs.sum(axis=1), 1.0)


def test_categorical_and_boolean_columns(labels):
    y, names = labels
    categorical = pl.Series("label", [names[v] for v in y], dtype=pl.Categorical)
    probs, found = parse_labels(categorical, class_names=names)
    np.testing.assert_array_equal(probs.argmax(axis=1), y)
    probs, found = parse_labels(pa.array(y == 0))
    assert found == ["false", "true"]
    np.testing.assert_array_equal(probs.argmax(axis=1), (y == 0).astype(int))


def test_integers_sorted_numerically_or_as_indices(labels):
    y, names = labels
    probs, found = parse_labels(pa.array(y * 5))  # 0, 5, ..., 45: "10" must follow "5"
    assert found == [str(5 * k) for k in range(10)]
    np.testing.assert_array_equal(probs.argmax(axis=1), y)
    probs, found = parse_labels(pa.array(y), class_names=names)  # indices into class_names
    assert found == names
    np.testing.assert_array_equal(probs.argmax(axis=1), y)
    numeric_names = [str(v) for v in range(100, 110)]  # integer names: matched by value
    probs, _ = parse_labels(pa.array(y + 100), class_names=numeric_names[::-1])
    np.testing.assert_array_equal(probs.argmax(axis=1), 9 - y)
    probs, _ = parse_labels(pl.Series(y.astype(np.float64)), class_names=names)  # 3.0 from CSV
    np.testing.assert_array_equal(probs.argmax(axis=1), y)


def test_probability_vectors_are_checked_and_renormalised(labels):
    y, names = labels
    probs = np.full((300, 10), 0.04, dtype=np.float64)
    probs[np.arange(300), y] = 0.64  # confidence labels, as in the HaS-Nets threat model
    probs[0] *= 1.0005  # within the 1e-3 tolerance
    parsed, found = parse_labels(pl.Series(probs), class_names=names)
    assert found == names and parsed.dtype == np.float32
    np.testing.assert_allclose(parsed.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(parsed[1:], probs[1:], atol=1e-7)
    _, found = parse_labels(pa.array(list(probs), pa.list_(pa.float32())))
    assert found == [f"class_{k}" for k in range(10)]
    as_json = pa.array([str(row.tolist()) for row in probs])  # how CSV stores lists
    np.testing.assert_allclose(parse_labels(as_json)[0], parsed, atol=1e-7)


@pytest.mark.parametrize(
    "column, class_names, message",
    [
        (pa.array(["Coat", None, "Bag"]), None, r"row 1, column 'label': missing label \(null\)"),
        (pa.array(["Coat", "Bag", "cat"]), ["Coat", "Bag"],
         r"row 2, column 'label': unknown label 'cat' \(known: 'Coat', 'Bag'\)"),
        (pa.array([0, 1, 12]), ["Coat", "Bag"],
         r"row 2, column 'label': label 12 is not a class index \(0..1"),
        (pa.array([3, 5, 4]), ["3", "5"], r"row 2, column 'label': unknown label 4"),
        (pa.array([1.0, 0.5]), None, r"row 1, column 'label': label 0.5 is not a whole number"),
        (pa.array([[0.5, 0.5], [0.5, 0.33]]), None,
         r"row 1, column 'label': probability vector sums to 0.83, not 1 \(tolerance 0.001\)"),
        (pa.array([[0.5, 0.5], [1.2, -0.2]]), None,
         r"row 1, column 'label': probability vector has a negative entry \(-0.2\)"),
        (pa.array([[0.5, 0.5], [0.2, 0.3, 0.5]]), None,
         r"row 1, column 'label': list has 3 values, expected 2"),
        (pa.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b", "c"],
         r"row 0, column 'label': list has 2 values, expected 3"),
        (pa.array([[0.5, 0.5], [0.2, None]]), None,
         r"row 1, column 'label': missing value \(null\) inside the list"),
        (pa.array([[0.5, 0.5], [float("nan"), 1.0]]), None, r"row 1, .*NaN"),
        (pa.array(["[0.5, 0.5]", "[0.5, 0.5"]), None, r"row 1, column 'label': not a valid JSON"),
    ],
)
def test_errors_name_row_and_column(column, class_names, message):
    with pytest.raises(InputError, match=message):
        parse_labels(column, column_name="label", class_names=class_names)
