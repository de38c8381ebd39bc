"""The `meterwatch` command. User errors print one line and exit 2; never a traceback.

Exit codes: 0 done; 2 a user error (bad input, setting or bundle: one line on stderr); 130
interrupted (Ctrl-C); 141 standard output closed early (`meterwatch alerts --json | head -1`:
silent, as a shell reports a command killed by SIGPIPE).

Over 300 lines: the one table of subcommands and their arguments; the work is in the wings.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from stream_app import __version__
from stream_app.core.errors import InputError, MeterwatchError
from stream_app.io.series_io import add_reader_arguments
from stream_app.models import default_bundle

# The shipped bundle: package data of an installed wheel, onnx_models/default in a checkout.
DEFAULT_BUNDLE = default_bundle()
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 128 + 13  # 128 + SIGPIPE


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _csv_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timestamp-col", help="timestamp column (default: autodetect)")
    p.add_argument("--value-col", help="value column, kWh per interval (default: autodetect)")
    p.add_argument("--meter-col", help="meter id column (default: one meter)")
    p.add_argument("--category-col", help="usage category column")
    p.add_argument("--meter-id", help="meter id when the file holds one meter")
    p.add_argument("--category", default="industrial",
                   help="usage category when there is no category column (default: industrial)")
    p.add_argument("--max-gap", type=int, default=4,
                   help="missing readings in a row filled by interpolation (default: 4)")
    add_reader_arguments(p)


def _read(args, meter_id: str | None = None):
    """The meter series of args.input; `meter_id`: the meter of a file that names none, when
    there is no --meter-id."""
    from stream_app.io.series_io import read_meter_csv, reader_options

    return read_meter_csv(
        args.input, timestamp_col=args.timestamp_col, value_col=args.value_col,
        meter_col=args.meter_col, category_col=args.category_col,
        default_meter_id=args.meter_id or meter_id, default_category=args.category,
        max_gap=args.max_gap, **reader_options(args),
    )


def cmd_train(args) -> int:
    try:
        from training.pipeline import TrainOptions, train_bundle
        from training.train import TrainConfig
    except ImportError as exc:
        raise MeterwatchError(
            f"training needs the train extra ({exc.name} is missing): "
            "pip install 'meterwatch[train,cpu]'"
        ) from None
    from stream_app.core.profiles import load_profile

    profile = load_profile(args.profile)
    series = _read(args)
    for s in series:
        for repair in s.repairs:
            print(f"repaired {repair}")
    models = ("cnn_gru", "lstm") if args.model == "both" else (args.model,)
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else None
    options = TrainOptions(
        models=models, window_sizes=windows,
        train=TrainConfig(epochs=args.epochs, seed=args.seed,
                          max_train_windows=args.max_train_windows),
        name=args.name or Path(args.out).name, version=args.version or "",
        seed=args.seed, attribution=args.attribution,
        command="meterwatch " + " ".join(shlex.quote(a) for a in sys.argv[1:]), unit=args.unit,
    )
    started = time.perf_counter()
    bundle = train_bundle(series, Path(args.out), profile, options)
    m = bundle.manifest
    size = sum(f.bytes for f in m.files.values())
    print(f"bundle {bundle.version} written to {args.out}: windows {list(m.window_sizes)}, "
          f"models {list(m.models)}, {size / 1024:.0f} KiB, "
          f"{time.perf_counter() - started:.0f} s")
    return 0


def cmd_sweep(args) -> int:
    try:
        from stream_app.devtools.sweep import DEFAULT_EPSILONS, epsilon_sweep
        from training.pipeline import TrainOptions
        from training.train import TrainConfig
    except ImportError as exc:
        raise MeterwatchError(f"sweep needs the train extra ({exc.name} is missing)") from None
    from stream_app.core.profiles import load_profile

    eps = tuple(float(e) for e in args.epsilons.split(",")) if args.epsilons else DEFAULT_EPSILONS
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else None
    options = TrainOptions(window_sizes=windows, seed=args.seed, name="sweep", version="1",
                           train=TrainConfig(epochs=args.epochs, seed=args.seed,
                                             max_train_windows=args.max_train_windows))
    results = epsilon_sweep(_read(args), Path(args.out), load_profile(args.profile), options, eps)
    print((Path(args.out) / "sweep.md").read_text())
    print(f"wrote {args.out}/sweep.csv, sweep.md and sweep.png ({len(results)} epsilons)")
    return 0


def cmd_score(args) -> int:
    from stream_app.core.model_bundle import Bundle
    from stream_app.core.offline import score_series
    from stream_app.core.scoring import Detector
    from stream_app.io.series_io import names_meters, write_rows_csv

    detector = Detector(Bundle.load(args.model))
    trained = list(detector.bundle.manifest.normalisation.meters)
    # a bundle of one meter scores a file that names no meter as that meter, not as a
    # stranger that warms up first; not the shipped bundle: its one meter is a steel plant,
    # and a file of the user's own meter is not its readings
    own = args.model != DEFAULT_BUNDLE
    only = trained[0] if len(trained) == 1 and args.meter_id is None and own else None
    series = _read(args, only)
    for s in series:
        for repair in s.repairs:
            print(f"repaired {repair}")
    header = ["timestamp", "meter_id", "category", "value", "score", "zscore", "threshold",
              "is_anomaly", "window_size", "reason", "kind"]
    limits = detector.bundle.limits
    need = detector.bundle.max_window + 1
    for s in series:
        _check_interval(s, detector.bundle)
        if len(s.values) < need:
            raise InputError(f"meter {s.meter_id}: {len(s.values)} readings are too short for "
                             f"window {need - 1} (need at least {need})")
    renamed = only is not None and only != Path(args.input).stem  # (its name otherwise)
    if renamed and not names_meters(args.input, args.meter_col):
        print(f"the file names no meter (no meter column, no --meter-id): scored as meter {only}, "
              f"the one meter bundle {detector.bundle.version} was trained on", file=sys.stderr)
    trained_unit = detector.bundle.manifest.training.config.get("unit")
    if trained_unit is not None and trained_unit != args.unit:  # both become kWh: a note only
        print(f"note: bundle {detector.bundle.version} was trained on readings in {trained_unit}; "
              f"this file is read as {args.unit} (--unit): if its readings are in "
              f"{trained_unit}, give --unit {trained_unit}", file=sys.stderr)
    written: list[tuple[int, list[Any]]] = []  # (file line, row): one per input row
    for s in series:
        rows = _output_rows(s, score_series(detector, s), limits.limit(s.category))
        print(f"meter {s.meter_id}: {len(rows)} rows, {sum(1 for _, r in rows if r[4])} scored, "
              f"{sum(r[7] for _, r in rows)} flagged, {len(s.repairs)} repairs", file=sys.stderr)
        written += rows
    written.sort(key=lambda item: item[0])  # input order
    table = [row for _, row in written]
    write_rows_csv(args.output, header, table)
    flagged = sum(row[7] for row in table)
    scored = sum(1 for row in table if row[4])
    print(f"scored {scored} of {len(table)} readings of {len(series)} meter(s) with "
          f"{detector.bundle.version}: {flagged} flagged; wrote {args.output}")
    return 0


def _check_interval(s, bundle) -> None:
    """Readings of another interval than the bundle's would be windows of another length of
    time: refused, with the way out."""
    trained = bundle.manifest.interval_s
    if s.interval_s == trained:
        return
    every = f"{trained // 60}min" if trained % 60 == 0 else str(trained)
    hint = (f"resample with --interval {every}" if trained % s.interval_s == 0
            else f"train a bundle on {s.interval_s} s readings")
    raise InputError(f"meter {s.meter_id}: readings every {s.interval_s} s, but bundle "
                     f"{bundle.version} was trained on readings every {trained} s ({hint})")


def _output_rows(s, result, limit) -> list[tuple[int, list]]:
    """(file line, output row) for each input row of a series: a row whose reading is on the
    grid gets that reading's score; a row that is not (a duplicate, an empty end...) is written
    unscored with why, and flagged when it is a data fault of the meter (a negative reading).
    Interpolated readings have no input row and are not written."""
    from stream_app.core.timestamps import format_timestamp

    def scored(i: int) -> list:
        return [format_timestamp(int(s.timestamps[i])), s.meter_id, s.category,
                f"{s.values[i]:.6g}", _fmt(result.score[i]), _fmt(result.z[i]), limit,
                int(result.flagged[i]), int(result.window[i]), result.reason[i], result.kind[i]]

    if s.source is None:  # not read from a file: one row per reading
        return [(i, scored(i)) for i in range(len(s.values))]
    src = s.source
    return [(int(src.lines[k]), scored(i) if i >= 0 else [
        format_timestamp(int(src.timestamps[k])), s.meter_id, s.category,
        _fmt(src.values[k], ".6g"), "", "", limit, int(k in src.faults), 0, src.notes[k],
        src.faults.get(k, "")])
        for k, i in enumerate(src.index.tolist())]


def _fmt(x: float, spec: str = ".6f") -> str:
    return "" if math.isnan(x) else format(x, spec)


def cmd_simulate(args) -> int:
    from stream_app.devtools.simulator import simulate_to_csv

    simulate_to_csv(args.out, args.profile, meters=args.meters, days=args.days, seed=args.seed,
                    anomalies_per_meter=args.anomalies_per_meter)
    print(f"wrote {args.meters} simulated {args.profile} meters x {args.days} days to {args.out}")
    return 0


def cmd_worker(args) -> int:
    from stream_app.stream.worker import run_worker

    return run_worker(loglevel=args.loglevel)


def cmd_broker(args) -> int:
    from stream_app.devtools.brokers import main_broker_cli

    return main_broker_cli(args.kind, args.port)


def cmd_demo(args) -> int:
    from stream_app.devtools.demo import run_demo

    return run_demo(meters=args.meters, days=args.days, speed=args.speed, seed=args.seed,
                    broker_kind=args.broker, model_dir=args.model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterwatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"meterwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model bundle from a CSV of meter readings")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--profile", default="generic", help="industry profile (metal, chemical, ...)")
    p.add_argument("--model", choices=("cnn_gru", "lstm", "both"), default="both")
    p.add_argument("--windows", help="comma-separated window sizes (default: FFT)")
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--max-train-windows", type=_positive_int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="bundle name (default: the output folder's name)")
    p.add_argument("--version", help="bundle version (default: a UTC timestamp)")
    p.add_argument("--attribution", help="data attribution recorded in the manifest")
    _csv_columns(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score every reading of a CSV with a model bundle")
    p.add_argument("--model", type=Path, default=DEFAULT_BUNDLE,
                   help="bundle folder (default: the shipped default bundle)")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    _csv_columns(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sweep", help="F1 vs MI-FGSM epsilon: table and plot")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--profile", default="chemical")
    p.add_argument("--epsilons", help="comma-separated (default 0 ... 1.0)")
    p.add_argument("--windows", help="comma-separated window sizes (default: FFT)")
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--max-train-windows", type=_positive_int, default=6_000)
    p.add_argument("--seed", type=int, default=0)
    _csv_columns(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("simulate", help="write simulated meters with labelled anomalies")
    p.add_argument("--profile", default="metal")
    p.add_argument("--meters", type=_positive_int, default=4)
    p.add_argument("--days", type=_positive_int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anomalies-per-meter", type=float, default=2.0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("worker", help="run a stream worker (settings from KAFKA_* and MW_* vars)")
    p.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("broker", help="run an embedded Kafka-protocol broker on loopback")
    p.add_argument("--kind", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("demo", help="broker + worker + simulated factory meters, live alerts")
    p.add_argument("--meters", type=_positive_int, default=8)
    p.add_argument("--days", type=_positive_int, default=10)
    p.add_argument("--speed", type=float, default=1000.0, help="readings per second to send")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--model", type=Path, default=DEFAULT_BUNDLE,
                   help="bundle folder (default: the shipped default bundle)")
    p.set_defaults(func=cmd_demo)

    # commands that live with their wing: (name, help, add its arguments, run it)
    from stream_app.devtools import evaluate
    from stream_app.io import alerts_cli, greenbutton, replay
    from stream_app.stream import feedback

    for name, help_text, add_arguments, run in (
        ("replay", "produce a CSV's readings to the per-meter topics",
         replay.add_replay_arguments, replay.run_replay),
        ("import-greenbutton", "import a Green Button file",
         greenbutton.add_import_arguments, greenbutton.run_import),
        ("evaluate", "detection metrics of a bundle on a labelled CSV",
         evaluate.add_evaluate_arguments, evaluate.run_evaluate),
        ("alerts", "print alerts from the alert topic (table or JSON)",
         alerts_cli.add_alerts_arguments, alerts_cli.run_alerts),
        ("feedback", "record an operator's verdict on an alert",
         feedback.add_feedback_arguments, feedback.run_feedback),
        ("recalibrate", "move the category limits from feedback",
         feedback.add_recalibrate_arguments, feedback.run_recalibrate),
    ):
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def _join_negative_offsets(argv: list[str]) -> list[str]:
    """`--tz -08:00` -> `--tz=-08:00`: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--tz", "--tz-offset") and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(_join_negative_offsets(sys.argv[1:] if argv is None else argv))
        try:
            return args.func(args)
        except MeterwatchError as exc:
            print(f"meterwatch {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            print(f"meterwatch {args.command}: error: {exc.strerror}: {exc.filename}",
                  file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"meterwatch {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our stdout is gone (`| head`): stop quietly
        _silence_stdout()
        return EXIT_STDOUT_CLOSED


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is still
    buffered does not fail again ("Exception ignored ... BrokenPipeError") on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file descriptor (captured): nothing to flush
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
