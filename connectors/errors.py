"""The one exception connectors raise for bad input data: :class:`InputError`.

Crowdsourced data arrives broken in many small ways: a probability vector that does not sum to 1,
an image that is 32x32 among 28x28 ones, a missing column. Whatever the cause, the person running
``sanitize`` needs to know *where* to look, so every ``InputError`` carries up to three
coordinates besides its message and prints them all on one line::

    >>> print(InputError("probability vector sums to 0.83, not 1",
    ...                  path="collected.parquet", row=17, column="label"))
    collected.parquet, row 17, column 'label': probability vector sums to 0.83, not 1

``row`` is the **0-based position of the record in that file** (or, when no file is known, in the
source the caller handed over): the first data row of a CSV file is row 0, whatever its line
number, and in a folder of Parquet shards the row counts from the start of the named shard.

The coordinates stay available as attributes (``error.path``, ``error.row``, ``error.column``,
``error.message``) so callers can re-raise with a more precise location, which is how
:func:`connectors.table_records.read_records` turns a position in a multi-file scan into a
position inside one file.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Input data that ``sanitize`` cannot use, with where the problem is.

    Parameters
    ----------
    message:
        What is wrong, phrased for the person who owns the data.
    path:
        The file (or folder) holding the problem, if known.
    row:
        0-based position of the offending record within ``path`` (see the module docstring).
    column:
        Name of the offending column, if the problem is in one column.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = " ".join(str(message).split())  # always one line
        self.path = None if path is None else str(path)
        self.row = None if row is None else int(row)
        self.column = column
        super().__init__(str(self))

    def where(self) -> str:
        """The location part of the message, e.g. ``"a.csv, row 3, column 'x'"`` (may be empty)."""
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def __reduce__(self):  # keep the coordinates when pickled (e.g. across worker processes)
        return (_rebuild, (self.message, self.path, self.row, self.column))

    def located(
        self,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> InputError:
        """A copy with the given coordinates filled in (coordinates already set are replaced)."""
        return InputError(
            self.message,
            path=self.path if path is None else path,
            row=self.row if row is None else row,
            column=self.column if column is None else column,
        )


def _rebuild(message: str, path: str | None, row: int | None, column: str | None) -> InputError:
    return InputError(message, path=path, row=row, column=column)
