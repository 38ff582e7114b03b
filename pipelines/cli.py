"""The ``sanitize`` command line: small composable steps, data on stdout, messages on stderr.

    sanitize ingest  collected.parquet --trusted trusted.parquet --label label -o ds/
    sanitize train   ds/ -o run/
    sanitize flag    run/ -o flags.parquet          # or -o - --format jsonl | next step
    sanitize export  run/ -o model.onnx
    sanitize predict model.onnx new.parquet -o preds.parquet
    sanitize poison  ds/ -o ds-poisoned/ --truth truth.parquet   # the attack lab, for testing
    sanitize demo                                       # all of the above on bundled data

Each command is a thin wrapper over a plain function of the same name in ``pipelines`` that ETL
code can import. Bad input ends with one line naming the file, row and column, and exit code 1.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from connectors.errors import InputError
from rich.markup import escape

from pipelines.console import StageProgress, err, quiet_libraries, say, warn
from sanitizer import __version__
from sanitizer.heal_and_select import DEFAULT_HEAL_STEPS, HealSelectConfig
from sanitizer.scoring import FlagRule

_DEFAULT = HealSelectConfig()


def reports_errors(fn):
    """Turn input and file errors into one line on stderr and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
            sys.exit(1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
            err.print(f"[red]error:[/red] {escape(str(e.filename))}: {e.strerror}", soft_wrap=True)
            sys.exit(1)
    return wrapper


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sanitize")
def main() -> None:
    """Find backdoor-poisoned records in crowdsourced training data and train a hardened model
    (HaS-Nets: heal on a small trusted set, select the records the healed network agrees with)."""
    quiet_libraries()


@main.command("ingest")
@click.argument("collected", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Dataset folder to write.")
@click.option("--label", help="Label column: class names, integers or probability vectors (audio class folders: none).")
@click.option("--trusted", "trusted_source", help="Trusted healing set: a separate file, glob or folder.")
@click.option("--trusted-column", help="Boolean column marking trusted records in the same table.")
@click.option("--id", "id_column", help="Record id column (default: ids derived from content).")
@click.option("--contributor", help="Contributor/source column (worker, vendor, upload).")
@click.option("--image", help="Image column (PNG/JPEG bytes, {bytes,path} struct, pixel lists) or pixel-column pattern like 'pixel*'.")
@click.option("--features", help="Comma-separated numeric feature columns (tabular data).")
@click.option("--text", help="Text column (free-text records).")
@click.option("--audio-path", help="Audio manifest: the column of file paths (relative to the manifest).")
@click.option("--sample-rate", type=int, help="Audio: resample to this rate (default: the most common).")
@click.option("--duration", type=float, help="Audio: clip length in seconds (default: 95th percentile).")
@click.option("--length-policy", type=click.Choice(["pad-crop", "pad", "crop", "exact"]), default="pad-crop", show_default=True,
              help="Audio: pad short and crop long clips, or quarantine the long (pad), short (crop) or any other (exact) ones.")
@click.option("--no-resample", is_flag=True, help="Audio: quarantine files at another rate instead of resampling them.")
@click.option("--classes", help="Comma-separated class names, fixing their order.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@reports_errors
def ingest_command(collected, output, label, trusted_source, trusted_column, id_column, contributor,
                   image, features, text, audio_path, sample_rate, duration, length_policy,
                   no_resample, classes, quiet):
    """Read and validate COLLECTED records (Parquet/CSV files, globs or folders, or audio: a
    folder with one sub-folder per class, or a manifest with --audio-path) and write a dataset
    folder (Parquet shards + manifest.json)."""
    from connectors.audio_files import AudioPolicy, is_audio_source
    from pipelines.ingest import ingest
    source = list(collected) if len(collected) > 1 else collected[0]
    if trusted_source is None and trusted_column is None:
        raise click.UsageError("give the trusted healing set: --trusted FILE or --trusted-column COLUMN")
    audio_folder = audio_path is None and is_audio_source(source)
    if label is None and not audio_folder:
        raise click.UsageError("give the label column: --label COLUMN")
    policy = AudioPolicy(sample_rate=sample_rate, duration=duration, length_policy=length_policy,
                         resample=not no_resample)
    manifest, warnings = ingest(source, output, label=label, trusted_source=trusted_source,
                                trusted_column=trusted_column, id=id_column, contributor=contributor,
                                image=image, features=csv_list(features), text=text,
                                audio_path=audio_path, audio_policy=policy,
                                class_names=csv_list(classes))
    for w in warnings:
        warn(w)
    c = manifest["counts"]
    say(f"ingested {c['collected']} collected + {c['trusted']} trusted {manifest['modality']} records, "
        f"{len(manifest['class_names'])} classes -> {output}", quiet)


@main.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--iterations", type=int, default=_DEFAULT.iterations, show_default=True, help="Heal-select-train rounds.")
@click.option("--train-epochs", type=float, default=_DEFAULT.train_epochs, show_default=True, help="Passes over the collected records per round.")
@click.option("--seed-steps", type=int, default=_DEFAULT.seed_steps, show_default=True, help="Steps of the first heal (trusted set only).")
@click.option("--heal-steps", type=int, default=None, show_default=f"{DEFAULT_HEAL_STEPS}, none on images", help="Steps of the heal on the trusted set after each round's training. Images skip it by default: it undid what the accepted records had taught (0.3-1.4 points of accuracy on Fashion-MNIST; benchmarks/RESULTS.md, session 25).")
@click.option("--suspect-threshold", type=float, default=_DEFAULT.suspect_threshold, show_default=True, help="Disagreement from which a record is put to the backdoor test.")
@click.option("--probe-steps", type=int, default=_DEFAULT.probe_steps, show_default=True, help="Fine-tuning steps of each probe of the backdoor test.")
@click.option("--probe-folds", type=click.IntRange(min=2), default=_DEFAULT.probe_folds, show_default=True, help="Folds of the suspects in the backdoor test: one probe per fold learns from the other folds and predicts it. Three against two: invisible-noise recall up at one seed of three (Fashion-MNIST 0.938 -> 0.967, CIFAR-10 0.949 -> 0.961), 10-30% more records of clean data flagged at every seed, 20-30% more time (benchmarks/RESULTS.md, session 31).")
@click.option("--threshold", type=float, default=_DEFAULT.threshold, show_default=True, help="Accept records whose suspicion is below this.")
@click.option("--rejected", type=click.Choice(["relabel", "unlearn", "both", "drop"]), default=_DEFAULT.rejected, show_default=True, help="What rejected records are trained on.")
@click.option("--accept-suspects/--refuse-suspects", "accept_suspects", default=None, show_default="refuse on audio only", help="Accept a suspect (a record the round's judging network doubts) when the backdoor test finds its label does not transfer, or leave every suspect out. Unset: suspects are refused on audio, where the judge (14 vetted spoken digits per class) doubts few clean clips and the doubted clips it had accepted were mostly poison (all-to-all tone ASR 4.3% / 3.0% -> 0.7% / 1.0% at seeds 2 / 4; benchmarks/RESULTS.md, session 29), accepted elsewhere, where a judge healed on a few trusted images doubts 18-41% of clean ones.")
@click.option("--unlearn-from", type=float, default=_DEFAULT.unlearn_from, show_default=True, help="Rejected records below this suspicion are left out instead (unlearn/both).")
@click.option("--unlearn-set-apart/--unlearn-every-sure", "unlearn_set_apart", default=None, show_default="audio only", help="Unlearn only the sure rejections the provenance test also set apart (they look unlike the trusted records), and leave the other rejections out; or unlearn every sure rejection. Unset: only set-apart ones on audio, where the backdoor test also lifts hard clean clips and unlearning them cost up to 4 points of accuracy on clean spoken digits (benchmarks/RESULTS.md, session 27), every sure one elsewhere.")
@click.option("--core-skew", type=float, default=_DEFAULT.core_skew, show_default=True, help="Heal the judging network on a class-balanced core of the trusted set when its commonest class has more than this many times the rarest's records.")
@click.option("--core-floor", type=int, default=_DEFAULT.core_floor, show_default=True, help="In that core each class keeps at most max(rarest class's count, this) records; 0 heals on every trusted record.")
@click.option("--backed", type=float, default=_DEFAULT.backed, show_default=True, help="With a core: rejected records that a network healed on every trusted record backs this firmly are left out, not unlearned.")
@click.option("--partners", type=int, default=_DEFAULT.partners, show_default=True, help="Dominance test: superimpositions per rejected record (images, audio, text); 0 turns the test off.")
@click.option("--full-dominance", type=float, default=_DEFAULT.full_dominance, show_default=True, help="A rejected record's suspicion is scaled by min(1, its dominance / this); rejected records it takes below --unlearn-from are left out, not unlearned.")
@click.option("--look-alikes", type=int, default=_DEFAULT.look_alikes, show_default=True, help="Look-alike test: non-suspect records compared with each sure rejection before it is unlearned; one whose lift they share (classes that overlap) is left out instead (benchmarks/RESULTS.md). 0 = off: every sure rejection is unlearned.")
@click.option("--specific-lift", type=float, default=_DEFAULT.specific_lift, show_default=True, help="A sure rejection is unlearned only if at least this much of its lift is its own (not shared by its look-alikes labelled otherwise); the others are left out.")
@click.option("--vouchers", type=int, default=_DEFAULT.vouchers, show_default=True, help="Look-alike test: a sure rejection is also unlearned when none of its this many nearest trusted records carries its label (a relabelled class, not a natural overlap).")
@click.option("--provenance-z", type=float, default=_DEFAULT.provenance_z, show_default=True, help="Provenance test: never accept a collected record that a classifier trained to tell collected from trusted records sets this many trusted standard deviations (log-odds) above the trusted ones: a trigger only collected records carry, whatever their labels say. 0 = off.")
@click.option("--refine-z", type=float, default=_DEFAULT.refine_z, show_default=True, help="Provenance test, second pass (images and audio): a classifier learns what sets the first pass's outliers (beyond --provenance-z) apart from its inliers, and the records it puts this many trusted standard deviations above the trusted ones are set apart instead (a sharper cut: all-to-all triggers). 0 = the first pass sets apart.")
@click.option("--suspect-z", type=float, default=_DEFAULT.suspect_z, show_default=True, help="Images with few trusted records (under --few-trusted): a suspect (a record the network healed on the trusted set alone disagrees with) that the provenance test puts more than this many trusted standard deviations above the trusted records is held back in every round, whatever the backdoor test says: two weak signals together (a tiny trusted set's judge doubts many clean records). 0 = off.")
@click.option("--few-trusted", type=int, default=_DEFAULT.few_trusted, show_default=True, help="Images whose trusted set (its healing core) holds fewer records than this: no heal after the first (a few dozen images are memorised: 3-4 points of accuracy on clean data at 50), and the gate of --suspect-z holds back far-out suspects in every round (a later judge has learned from what the first round let in). Larger trusted sets judge well enough without the gate. 0 = never.")
@click.option("--group-floor", type=float, default=_DEFAULT.group_floor, show_default=True, help="Provenance test, per class: a class fewer than this share of whose collected records score below the trusted records' median (about half do in a clean class) is set apart whole and learned from its trusted records only: a clean-label trigger on every record of a class. 0 = off.")
@click.option("--own-lift", type=float, default=None, show_default="0.5 on images, 0 elsewhere", help="A final suspicion of at least 0.3 moves this far (0-1) towards the record's own lift: the part of it that its --look-alikes labelled otherwise do not share (a content rule moves them too, a trigger does not). 0 = off. At 0.5 flag precision rose on every Fashion-MNIST attack (clean-label 0.866 -> 0.922) and the invisible noise trigger's recall fell 0.940 -> 0.927 (benchmarks/RESULTS.md, session 29).")
@click.option("--shifted-power", type=float, default=_DEFAULT.shifted_power, show_default=True, help="A record the provenance test set apart scores at least (1 - the rounds' last network's support for its label) to this power, times its --shifted-ramp weight: that network never trained on it, so a label it gives next to nothing is no trigger's lesson. 0 = off.")
@click.option("--shifted-ramp", type=float, default=_DEFAULT.shifted_ramp, show_default=True, help="That floor counts fully for records this many trusted standard deviations beyond the set-apart cut, and in proportion nearer it (records set apart with their class or a planted word count fully, and a record of a class set apart whole scores at least this distance weight alone, whatever its support: a clean-label trigger keeps the true label); 0 = fully for all.")
@click.option("--shifted-unsupported", type=float, default=_DEFAULT.shifted_unsupported, show_default=True, help="...or, when higher, 1 - support / this: a set-apart record whose label the network all but rules out (support under this) counts nearly fully however near the cut. 0 = distance only.")
@click.option("--token-alpha", type=float, default=_DEFAULT.token_alpha, show_default=True, help="Provenance test for text, one token at a time: a word that the collected texts carry far more often than the trusted ones would lead one to expect (binomial tail below this over the number of words tested) sets every collected text carrying it apart. 0 = off.")
@click.option("--provenance-steps", type=int, default=_DEFAULT.provenance_steps, show_default=True, help="Training steps of each of the provenance test's classifiers.")
@click.option("--provenance-folds", type=int, default=_DEFAULT.provenance_folds, show_default=True, help="Provenance test, first pass: the trusted and collected records are split in this many parts, and each part is scored by a classifier trained on all the others (2 to the number of trusted records). More folds let each classifier learn 'trusted' from more of a small trusted set instead of memorising a few of them. 0: on images as many as it takes for each classifier to learn from 100 trusted records, or from all but a tenth of a smaller set (up to 10); 2 elsewhere.")
@click.option("--retrain/--no-retrain", default=None, show_default="text only", help="Serve a network trained from scratch on the last round's selection (accepted records, trusted set, unlearned rejections) and healed, instead of the network that made the rounds; the scores are the rounds' either way. Unset: on for text, off for images, audio and tabular records, where the rounds' network served as well or better (benchmarks/RESULTS.md, session 19).")
@click.option("--prior-correction/--no-prior-correction", default=_DEFAULT.prior_correction, show_default=True, help="Divide the backdoor-test probes' shift of class priors out of their predictions.")
@click.option("--prior-gap", type=float, default=_DEFAULT.prior_gap, show_default=True, help="Judge collected records under their own class priors (EM on the healed network's predictions) when the trusted set's class mix is farther than this (total variation) from the collected labels'; 0 always, 1 never.")
@click.option("--max-prior-division", type=float, default=_DEFAULT.max_prior_division, show_default=True, help="Under collected priors, the prior correction divides no class by more than this.")
@click.option("--batch-size", type=int, default=_DEFAULT.batch_size, show_default=True)
@click.option("--lr", type=float, default=_DEFAULT.lr, show_default=True)
@click.option("--widths", help="Network widths, comma-separated (default: sized by the data).")
@click.option("--seed", type=int, default=_DEFAULT.seed, show_default=True)
@click.option("--device", default=_DEFAULT.device, show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Text: tokens read per record (longer texts are truncated).")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
@reports_errors
def train_command(dataset, output, quiet, widths, max_tokens, **knobs):
    """Train a hardened network on DATASET with heal-and-select; write a run folder."""
    from pipelines.train import train
    config = HealSelectConfig(**knobs, widths=tuple(int(w) for w in widths.split(",")) if widths else None)
    with StageProgress(quiet) as progress:
        summary = train(dataset, output, config, progress, argv=sys.argv, max_tokens=max_tokens)
    say(f"trained on {summary['collected']} collected + {summary['trusted']} trusted records in "
        f"{summary['timings_s']['total']:.1f}s; accepted {summary['accepted_last_iteration']} in the "
        f"last round -> {output}", quiet)
    for name in summary["shifted_classes"]:
        warn(f"class '{name}': its collected records as a group are told apart from its trusted "
             f"ones (a clean-label trigger on the whole class?); none was trained on, the class "
             f"was learned from its trusted records only")
    for word in summary.get("planted_words", []):
        warn(f"word '{word}': far more collected texts carry it than the trusted sample would lead "
             f"one to expect (a planted trigger word?); none of them was trained on")


@main.command("flag")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, help="Report file (.parquet, .csv, .jsonl) or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]), help="Report format (default: by suffix; jsonl for -).")
@click.option("--threshold", type=float, help="Flag records with score >= this.")
@click.option("--contamination", type=float, help="Flag this share of records (expected poison rate).")
@click.option("--top-k", type=int, help="Flag the K highest-scoring records.")
@click.option("--contributors", "contributors_output", help="Write the per-contributor summary here.")
@click.option("--split", type=click.Path(path_type=Path), help="Folder to write clean.parquet and quarantined.parquet into.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@reports_errors
def flag_command(run, output, fmt, threshold, contamination, top_k, contributors_output, split, quiet):
    """Write RUN's per-record report: scores, ranks, flags and reasons."""
    from pipelines.flag import flag_run
    try:
        rule = FlagRule(threshold=threshold, contamination=contamination, top_k=top_k)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    summary = flag_run(run, output, rule=rule, fmt=fmt, contributors_output=contributors_output, split=split)
    say(f"flagged {summary['flagged']} of {summary['records']} records ({summary['rule']})", quiet)
    if not quiet and summary["contributors"]:
        top = ", ".join(f"{c['contributor']} {c['flagged']}/{c['records']} (p={c['p_value']:.1g})"
                        for c in summary["contributors"][:3])
        say(f"most flagged contributors: {top}")


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("-q", "--quiet", is_flag=True)
@reports_errors
def export_command(run, output, quiet):
    """Export RUN's hardened network to ONNX, verified against PyTorch with onnxruntime."""
    from pipelines.export import export_run
    from sanitizer.onnx_export import ExportError
    try:
        report = export_run(run, output)
    except ExportError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    say(f"exported {output} (opset {report['opset']}); onnxruntime matches PyTorch on "
        f"{report['records_checked']} records, max |diff| {report['max_abs_diff']:.1e}", quiet)


@main.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Predictions file (.parquet, .csv, .jsonl) or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]))
@click.option("--id", "id_column", help="Record id column to carry over.")
@click.option("--image", help="Image column (default: found as in ingest).")
@click.option("--features", help="Comma-separated feature columns (default: the model's).")
@click.option("--text", help="Text column (default: the model's).")
@click.option("--audio-path", default="path", show_default=True, help="Audio manifest: the column of file paths.")
@click.option("-q", "--quiet", is_flag=True)
@reports_errors
def predict_command(model, data, output, fmt, id_column, image, features, text, audio_path, quiet):
    """Run the ONNX MODEL with onnxruntime on new DATA (Parquet/CSV; for audio models an audio
    folder or manifest)."""
    from pipelines.export import predict
    source = list(data) if len(data) > 1 else data[0]
    table, quarantine = predict(model, source, output, id=id_column, image=image,
                                features=csv_list(features), text=text, path=audio_path, fmt=fmt)
    if quarantine is not None and quarantine.height:
        warn(f"{quarantine.height} audio file(s) skipped (first: {quarantine['path'][0]}: "
             f"{quarantine['reason'][0]})")
    say(f"predicted {table.height} records -> {output}", quiet)


def _register_extras() -> None:
    from pipelines.demo import demo_command
    from pipelines.poison import poison_command
    main.add_command(reports_errors_command(poison_command))
    main.add_command(demo_command)


def reports_errors_command(command: click.Command) -> click.Command:
    command.callback = reports_errors(command.callback)
    return command


_register_extras()
