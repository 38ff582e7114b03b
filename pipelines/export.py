"""``sanitize export`` and ``sanitize predict``: the hardened model as ONNX, and serving it with
onnxruntime on new Parquet/CSV data or audio folders/manifests.

The model's metadata holds everything serving needs besides the graph: class names, the input
spec (modality, shape, scale; for audio the sample rate and the length policy; for text the
tokenizer as JSON, also written beside the model as ``<model>.tokenizer.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import torch

from connectors.atomic import atomic_path
from connectors.audio_files import AudioPolicy, read_audio_features
from connectors.dataset_folder import read_dataset
from connectors.errors import InputError
from connectors.reports import write_table
from connectors.run_folder import read_run
from connectors.table_records import read_features
from connectors.text_tokens import TextTokenizer
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
    records, ds_manifest = read_dataset(man["dataset"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(records), size=min(check_records, len(records)), replace=False)
    sample = records.features[np.sort(pick)]
    modality = man["modality"]
    input_spec = {"modality": modality, "shape": man["input_shape"], "dtype": "float32",
                  "feature_names": man["feature_names"], "scale": SCALES[modality]}
    if modality == "audio":
        input_spec |= {"sample_rate": man["sample_rate"], "audio_policy": man["audio_policy"]}
    if modality == "text":
        tokenizer = TextTokenizer.from_dict(run["tokenizer"])
        sample = tokenizer.encode(sample)
        input_spec |= {"dtype": "int64", "shape": [None], "tokenizer": run["tokenizer"]}
    metadata = {"sanitize_version": __version__, "class_names": man["class_names"],
                "input_spec": input_spec, "columns": ds_manifest.get("columns", {})}
    model, report = export_onnx(load_model(run), sample, metadata)
    output = Path(output)
    with atomic_path(output) as tmp:
        onnx.save_model(model, str(tmp))
    if modality == "text":
        with atomic_path(tokenizer_path(output)) as tmp:
            tmp.write_text(json.dumps(run["tokenizer"], ensure_ascii=False) + "\n")
    return {"output": str(output), **report}


SCALES = {"image": "raw pixel values 0..255", "tabular": "raw features",
          "audio": "mono waveform in [-1, 1] at sample_rate Hz",
          "text": "token ids from the tokenizer in the metadata (0 = padding)"}


def tokenizer_path(model_path: str | Path) -> Path:
    """Where the tokenizer of a text model is written beside it: ``<model>.tokenizer.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".tokenizer.json")


def read_metadata(model_path: str | Path) -> dict:
    meta = session(str(model_path)).get_modelmeta().custom_metadata_map
    try:
        return {"class_names": json.loads(meta["class_names"]), "input_spec": json.loads(meta["input_spec"])}
    except KeyError as e:
        raise InputError(f"not a sanitize model: metadata {e} missing", path=str(model_path)) from None


def _model_inputs(spec: dict, source, *, id: str | None, image: str | None,
                  features: list[str] | None, text: str | None, path: str
                  ) -> tuple[np.ndarray, np.ndarray, pl.DataFrame | None]:
    """Read ``source`` as the model's input: ``(inputs, ids, quarantine or None)``."""
    modality = spec["modality"]
    if modality == "audio":
        policy = AudioPolicy.from_dict(spec["audio_policy"])
        return read_audio_features(source, path=path, id=id, policy=policy)
    if modality == "text":
        texts, ids = read_features(source, modality="text", id=id,
                                   text=text or (spec["feature_names"] or [None])[0])
        return TextTokenizer.from_dict(spec["tokenizer"]).encode(texts), ids, None
    x, ids = read_features(source, modality=modality, id=id, image=image,
                           features=features or spec["feature_names"] or None,
                           image_shape=tuple(spec["shape"]) if modality == "image" else None)
    if list(x.shape[1:]) != list(spec["shape"]):
        raise InputError(f"records have shape {list(x.shape[1:])}, the model expects {spec['shape']}",
                         path=str(source))
    return x, ids, None


def predict(model_path: str | Path, source, output: str | Path | None, *, id: str | None = None,
            image: str | None = None, features: list[str] | None = None, text: str | None = None,
            path: str = "path", fmt: str | None = None
            ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Run the ONNX model on the records of ``source``; write ``id``, ``predicted_label``,
    ``confidence`` and one ``prob_<class>`` column per class to ``output`` (``-`` = stdout).

    ``source`` is a table (Parquet/CSV, columns found as in ingest; for text models the text
    column the model was trained on, or ``text``) or, for audio models, an audio folder or a
    manifest with a ``path`` column. Returns ``(predictions, quarantine)``: the audio files that
    could not be used and why (``None`` for other modalities)."""
    meta = read_metadata(model_path)
    x, ids, quarantine = _model_inputs(meta["input_spec"], source, id=id, image=image,
                                       features=features, text=text, path=path)
    probs = run_onnx(session(str(model_path)), x)
    classes = meta["class_names"]
    table = pl.DataFrame({"id": ids.astype(str),
                          "predicted_label": np.asarray(classes, dtype=object)[probs.argmax(1)].astype(str),
                          "confidence": probs.max(1)})
    table = table.with_columns([pl.Series(f"prob_{c}", probs[:, k]) for k, c in enumerate(classes)])
    if output is not None:
        write_table(table, output, fmt)
    return table, quarantine
