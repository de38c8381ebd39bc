"""The `meterwatch` command, on click. User errors print one line and exit 2; never a traceback.

Exit codes: 0 done; 2 a user error (a bad option, input, setting or bundle, or no broker
answering: one line on stderr); 130 interrupted (Ctrl-C); 141 standard output closed early
(`meterwatch alerts --json | head -1`: silent, as a shell reports a command killed by SIGPIPE).

Click runs with standalone_mode=False, so that its usage errors come back here and are printed
as one line like every other user error, instead of click's usage block. Every option's default
shows in `--help`; an option that is also a setting (stream_app/stream/settings.py) reads its
variable, named in `--help`. Shell completion is click's: `_METERWATCH_COMPLETE=bash_source`.

Over 300 lines: the one table of subcommands and their options; the work is in the wings.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from stream_app import __version__
from stream_app.core.errors import InputError, MeterwatchError
from stream_app.io.series_io import csv_params
from stream_app.models import default_bundle

# The shipped bundle: package data of an installed wheel, onnx_models/default in a checkout.
DEFAULT_BUNDLE = default_bundle()
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 128 + 13  # 128 + SIGPIPE
HELP = """Real-time anomaly detection for industrial electricity meters.

\b
Exit codes:
  0    done
  2    a user error: bad option, input, setting or bundle, no broker (one line on stderr)
  130  interrupted (Ctrl-C)
  141  standard output closed early (`meterwatch alerts --json | head -1`), silently

\b
Shell completion (bash; zsh_source and fish_source likewise):
  eval "$(_METERWATCH_COMPLETE=bash_source meterwatch)"
"""


class PositiveInt(click.ParamType):
    name = "integer"

    def convert(self, value, param, ctx) -> int:
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if number < 1:
            self.fail(f"must be >= 1, got {number}", param, ctx)
        return number


def _path(*decls: str, **kwargs: Any) -> click.Option:
    return click.Option(list(decls), type=click.Path(path_type=Path), **kwargs)


def model_param() -> click.Option:
    """--model of the commands that score: the worker's MW_MODEL_DIR, the shipped bundle when
    unset, as the worker's."""
    return _path("--model", default=DEFAULT_BUNDLE, envvar="MW_MODEL_DIR", show_envvar=True,
                 show_default="the shipped default bundle", help="bundle folder")


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


def _train_params() -> list[click.Parameter]:
    return [
        _path("--input", required=True), _path("--out", required=True),
        click.Option(["--profile"], default="generic", help="industry profile (metal, chemical, ...)"),
        click.Option(["--model"], type=click.Choice(("cnn_gru", "lstm", "both")), default="both"),
        click.Option(["--windows"], help="comma-separated window sizes (default: FFT)"),
        click.Option(["--epochs"], type=PositiveInt(), default=30),
        click.Option(["--max-train-windows"], type=PositiveInt(), default=20_000),
        click.Option(["--seed"], type=int, default=0),
        click.Option(["--name"], help="bundle name (default: the output folder's name)"),
        click.Option(["--version"], help="bundle version (default: a UTC timestamp)"),
        click.Option(["--attribution"], help="data attribution recorded in the manifest"),
        *csv_params(),
    ]


def _score_params() -> list[click.Parameter]:
    return [model_param(), _path("--input", required=True),
            _path("--output", "--out", "output", required=True), *csv_params()]


def _sweep_params() -> list[click.Parameter]:
    return [
        _path("--input", required=True), _path("--out", required=True),
        click.Option(["--profile"], default="chemical"),
        click.Option(["--epsilons"], help="comma-separated (default: 0 ... 1.0)"),
        click.Option(["--windows"], help="comma-separated window sizes (default: FFT)"),
        click.Option(["--epochs"], type=PositiveInt(), default=10),
        click.Option(["--max-train-windows"], type=PositiveInt(), default=6_000),
        click.Option(["--seed"], type=int, default=0),
        *csv_params(),
    ]


def _simulate_params() -> list[click.Parameter]:
    return [
        click.Option(["--profile"], default="metal"),
        click.Option(["--meters"], type=PositiveInt(), default=4),
        click.Option(["--days"], type=PositiveInt(), default=28),
        click.Option(["--seed"], type=int, default=0),
        click.Option(["--anomalies-per-meter"], type=float, default=2.0),
        _path("--out", required=True),
    ]


def _demo_params() -> list[click.Parameter]:
    return [
        click.Option(["--meters"], type=PositiveInt(), default=8),
        click.Option(["--days"], type=PositiveInt(), default=10),
        click.Option(["--speed"], type=float, default=1000.0, help="readings per second to send"),
        click.Option(["--seed"], type=int, default=7),
        click.Option(["--broker"], type=click.Choice(("tansu", "kafka")), default="tansu"),
        model_param(),
    ]


def _commands() -> list[click.Command]:
    """Every subcommand: (name, help, options, run it[, whether it talks to Kafka: then the
    broker is asked first])."""
    from stream_app.devtools import evaluate
    from stream_app.io import alerts_cli, greenbutton, replay
    from stream_app.stream import feedback

    def always(args: SimpleNamespace) -> bool:
        return True

    return [_command(*spec) for spec in (
        ("train", "train a model bundle from a CSV of meter readings", _train_params(), cmd_train),
        ("score", "score every reading of a CSV with a model bundle", _score_params(), cmd_score),
        ("sweep", "F1 vs MI-FGSM epsilon: table and plot", _sweep_params(), cmd_sweep),
        ("simulate", "write simulated meters with labelled anomalies", _simulate_params(),
         cmd_simulate),
        ("worker", "run a stream worker (settings from KAFKA_* and MW_* vars)",
         [click.Option(["--loglevel"], default="info",
                       type=click.Choice(("debug", "info", "warning", "error")))], cmd_worker),
        ("broker", "run an embedded Kafka-protocol broker on loopback",
         [click.Option(["--kind"], type=click.Choice(("tansu", "kafka")), default="tansu"),
          click.Option(["--port"], type=int, help="(default: a free port)")], cmd_broker),
        ("demo", "broker + worker + simulated factory meters, live alerts", _demo_params(),
         cmd_demo),
        # the commands that live with their wing
        ("replay", "produce a CSV's readings to the per-meter topics", replay.replay_params(),
         replay.run_replay, replay.uses_kafka),
        ("import-greenbutton", "import a Green Button file (FILE: ESPI XML or CSV export)",
         greenbutton.import_params(), greenbutton.run_import, greenbutton.uses_kafka),
        ("evaluate", "detection metrics of a bundle on a labelled CSV",
         evaluate.evaluate_params(), evaluate.run_evaluate),
        ("alerts", "print alerts from the alert topic (table or JSON)",
         alerts_cli.alerts_params(), alerts_cli.run_alerts, always),
        ("feedback", "record an operator's verdict on an alert", feedback.feedback_params(),
         feedback.run_feedback, always),
        ("recalibrate", "move the category limits from feedback", feedback.recalibrate_params(),
         feedback.run_recalibrate, always),
    )]


_PARSE_ONLY = object()  # ctx.obj of parse_args: the commands hand back their arguments


def _command(name: str, help_text: str, params: list[click.Parameter],
             run: Callable[[Any], int],
             uses_kafka: Callable[[SimpleNamespace], bool] | None = None) -> click.Command:
    """A subcommand whose run function gets its options as attributes (args.input, ...)."""

    def callback(**values: Any) -> Any:
        args = SimpleNamespace(command=name, **values)
        if click.get_current_context().obj is _PARSE_ONLY:
            return args
        return _run(args, run, uses_kafka)

    return click.Command(name, params=params, callback=callback, help=help_text,
                         short_help=help_text)


def build_cli() -> click.Group:
    group = click.Group("meterwatch", commands=_commands(), help=HELP, no_args_is_help=False,
                        context_settings={
                            "show_default": True, "help_option_names": ["-h", "--help"]})
    return click.version_option(__version__, "--version", prog_name="meterwatch",
                                message="%(prog)s %(version)s")(group)


def _run(args: SimpleNamespace, run: Callable[[Any], int],
         uses_kafka: Callable[[SimpleNamespace], bool] | None) -> int:
    """Run a command; what it raises on purpose becomes one line and an exit code."""
    try:
        try:
            if uses_kafka is not None and uses_kafka(args):
                _check_broker()
            return run(args)
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


def _check_broker() -> None:
    """A broker that does not answer within MW_BROKER_WAIT_S is one line (the worker's start-up
    check), not a traceback or librdkafka's line per refused connection."""
    from stream_app.stream.settings import KafkaSettings, WorkerSettings
    from stream_app.stream.worker import check_brokers_reachable

    check_brokers_reachable(KafkaSettings.from_env(), WorkerSettings.from_env().broker_wait_s)


def parse_args(argv: list[str]) -> SimpleNamespace:
    """The arguments a command line gives its run function, without running it (tests, and
    the checks of the commands in deploy files). Raises click.UsageError."""
    return build_cli().main(list(argv), "meterwatch", standalone_mode=False, obj=_PARSE_ONLY)


def main(argv: list[str] | None = None) -> int:
    try:
        code = build_cli().main(sys.argv[1:] if argv is None else list(argv), "meterwatch",
                                standalone_mode=False)
    except click.UsageError as exc:  # click's usage block, as one line
        where = exc.ctx.command_path if exc.ctx is not None else "meterwatch"
        message = " ".join(exc.format_message().split())
        print(f"{where}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except click.Abort:  # Ctrl-C outside a command (while starting)
        print("meterwatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


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
