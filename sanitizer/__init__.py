"""sanitize's core: the dataset model, networks, the heal-and-select engine, scoring, attacks,
metrics and ONNX export. No file formats and no CLI live here (see ``connectors`` and
``pipelines``)."""

__version__ = "0.1.0"
