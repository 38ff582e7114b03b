"""``sanitize export`` and ``sanitize predict``: the hardened model as ONNX, and serving it with
onnxruntime on new Parquet/CSV data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import torch

from connectors.atomic import atomic_path
from connectors.dataset_folder import read_dataset
from connectors.errors import InputError
from connectors.reports import write_table
from connectors.run_folder import read_run
from connectors.table_records import read_features
from sanitizer import __version__
from sanitizer.networks import NetworkSpec, build_network
from sanitizer.onnx_export import export_onnx, run_onnx, session


def load_model(run: dict) -> torch.nn.Module:
    net = build_network(NetworkSpec.from_dict(run["network"]))
    net.load_state_dict(run["state_dict"])
    return net.eval()


def export_run(run_folder: str | Path, output: str | Path, check_records: int = 256) -> dict:
    """Export the run's served network to ``output`` and check it on ``check_records`` records
    of the run's dataset; returns the parity report."""
    run = read_run(run_folder)
    man = run["manifest"]
    records, _ = read_dataset(man["dataset"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(records), size=min(check_records, len(records)), replace=False)
    metadata = {
        "sanitize_version": __version__,
        "class_names": man["class_names"],
        "input_spec": {"modality": man["modality"], "shape": man["input_shape"],
                       "dtype": "float32", "feature_names": man["feature_names"],
                       "scale": "raw pixel values 0..255" if man["modality"] == "image" else "raw features"},
        "columns": run.get("columns", {}),
    }
    model, report = export_onnx(load_model(run), records.features[np.sort(pick)], metadata)
    output = Path(output)
    with atomic_path(output) as tmp:
        onnx.save_model(model, str(tmp))
    return {"output": str(output), **report}


def read_metadata(model_path: str | Path) -> dict:
    meta = session(str(model_path)).get_modelmeta().custom_metadata_map
    try:
        return {"class_names": json.loads(meta["class_names"]), "input_spec": json.loads(meta["input_spec"])}
    except KeyError as e:
        raise InputError(f"not a sanitize model: metadata {e} missing", path=str(model_path)) from None


def predict(model_path: str | Path, source, output: str | Path | None, *, id: str | None = None,
            image: str | None = None, features: list[str] | None = None, fmt: str | None = None
            ) -> pl.DataFrame:
    """Run the ONNX model on the records of ``source``; write ``id``, ``predicted_label``,
    ``confidence`` and one ``prob_<class>`` column per class to ``output`` (``-`` = stdout)."""
    meta = read_metadata(model_path)
    spec = meta["input_spec"]
    x, ids = read_features(source, modality=spec["modality"], id=id, image=image,
                           features=features or spec["feature_names"] or None,
                           image_shape=tuple(spec["shape"]) if spec["modality"] == "image" else None)
    if list(x.shape[1:]) != list(spec["shape"]):
        raise InputError(f"records have shape {list(x.shape[1:])}, the model expects {spec['shape']}",
                         path=str(source))
    probs = run_onnx(session(str(model_path)), x.astype(np.float32))
    classes = meta["class_names"]
    table = pl.DataFrame({"id": ids.astype(str),
                          "predicted_label": np.asarray(classes, dtype=object)[probs.argmax(1)].astype(str),
                          "confidence": probs.max(1)})
    table = table.with_columns([pl.Series(f"prob_{c}", probs[:, k]) for k, c in enumerate(classes)])
    if output is not None:
        write_table(table, output, fmt)
    return table
