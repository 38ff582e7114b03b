"""Everything that touches files: turn user data into :class:`~sanitizer.records.Records` and back.

``sanitizer`` (the algorithms) never reads or writes a file; ``connectors`` does all of it, and
checks the input on the way in so that a bad record is reported with its file, row and column
(:class:`~connectors.errors.InputError`) instead of surfacing later as a shape error in training.

==========================  =====================================================================
module                      what it does
==========================  =====================================================================
``errors``                  :class:`InputError`, one-line messages with file, row, column
``atomic``                  :func:`atomic_path`: files and folders appear complete or not at all
``tables``                  :func:`scan_table`: Parquet/CSV files, globs, shard folders, lists
``images``                  image columns (PNG/JPEG bytes, HF structs, pixel lists, pixel
                            columns) to ``uint8`` ``(N, C, H, W)``; :func:`encode_png`
``labels``                  label columns (names, integers, probability vectors) to ``(N, K)``
``table_records``           :func:`read_records`: a table to ``Records`` (images, features, text)
``audio_files``             audio folders and manifests to waveforms, with a quarantine table
``text_tokens``             :func:`normalize_text`, :class:`TextTokenizer` (no download needed)
``dataset_folder``          the ingested dataset folder: :func:`write_dataset`,
                            :func:`read_dataset`, :func:`read_manifest`
``reports``                 :func:`write_table`, :func:`read_table`: Parquet, CSV, JSON lines
==========================  =====================================================================
"""

from connectors.atomic import atomic_path
from connectors.dataset_folder import read_dataset, read_manifest, write_dataset
from connectors.errors import InputError
from connectors.images import encode_png, images_from_column
from connectors.labels import parse_labels
from connectors.reports import read_table, write_table
from connectors.table_records import read_records
from connectors.tables import file_sha256, scan_table, source_files

__all__ = [
    "InputError",
    "atomic_path",
    "encode_png",
    "file_sha256",
    "images_from_column",
    "parse_labels",
    "read_dataset",
    "read_manifest",
    "read_records",
    "read_table",
    "scan_table",
    "source_files",
    "write_dataset",
    "write_table",
]
