"""The ``edgeboost`` command. Each subcommand imports only what it needs, so that
``edgeboost predict``/``serve`` work on a device that has nothing but cffi."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


__all__ = ["main"]

# Optional dependencies (top-level module -> the extra that installs it, pyproject.toml).
_EXTRAS = {
    "xgboost": "compile",
    "treelite": "compile",
    "tl2cgen": "compile",
    "numpy": "compile",
    "yaml": "compile",
    "sklearn": "train",
    "awsiot": "greengrass",
    "awscrt": "greengrass",
    "matplotlib": "bench",
    "onnx": "bench",
    "onnxmltools": "bench",
    "onnxruntime": "bench",
}


class _HELP(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, but not "(default: None)" or False for a flag."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        # argparse asks shutil for the width, on every add_argument: shutil (with bz2 and lzma)
        # costs `serve` 0.5 MiB on a device, for a help text it never prints.
        if kwargs.get("width") is None:
            kwargs["width"] = _terminal_columns() - 2  # as argparse does
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else the terminal's, else 80."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # no stdout (None), or not a terminal
            columns = 80
    return columns


_DESCRIPTION = (
    "Compile XGBoost models into small native libraries, check them against XGBoost, and "
    "serve them on AWS IoT Greengrass devices with nothing but python3 and cffi."
)


def _path(text: str) -> Path:
    """argparse's type for paths. pathlib is imported here, not at the top: `serve` on a
    device never parses a path argument and pathlib costs 0.6 MiB there."""
    from pathlib import Path

    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "broker"):
        # Long-running components: info to stdout, problems to stderr (the Nucleus logs
        # stderr as WARN).
        from edgeboost.runtime.service_log import configure_service_logging

        configure_service_logging(verbose=args.verbose)
    else:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(message)s"
            if args.command in ("compile", "train")
            else "%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    from edgeboost.runtime.exceptions import EdgeboostError

    debug = getattr(args, "debug", False)
    try:
        result: int = args.handler(args)
        return result
    except EdgeboostError as exc:
        if debug:
            import traceback  # only here: devices start this module on every serve

            traceback.print_exc()
        print(f"edgeboost {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"edgeboost {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:  # not an optional dependency: a real bug, shown in full
            raise
        print(
            f"edgeboost {args.command}: error: {exc}\n"
            f"hint: this command needs an extra: pip install 'edgeboost[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        # compile reads files from anywhere: whatever XGBoost, Treelite or a compiler does
        # that was not foreseen is still one line, unless --debug asks for the traceback.
        if args.command != "compile" or debug:
            raise
        lines = str(exc).strip().splitlines()
        print(
            f"edgeboost compile: error: {type(exc).__name__}: {lines[0] if lines else ''} "
            "(unexpected; run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeboost", description=_DESCRIPTION, formatter_class=_HELP
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", formatter_class=_HELP, help="train a reference model from its raw data"
    )
    train.add_argument("dataset", choices=["wine-quality"])
    train.add_argument("--data", required=True, type=_path, help="folder with the raw UCI CSVs")
    train.add_argument("-o", "--output", required=True, type=_path, help="model file (.json/.ubj)")
    train.add_argument(
        "--trials", type=int, default=None, help="tuning trials (default: full search)"
    )
    train.add_argument("--seed", type=int, default=2, help="seed for tuning and training")
    train.set_defaults(handler=_train)

    comp = commands.add_parser(
        "compile", formatter_class=_HELP, help="compile an XGBoost model into a bundle"
    )
    comp.add_argument("model", type=_path, help="XGBoost model (.json or .ubj)")
    comp.add_argument("-o", "--output", required=True, type=_path, help="bundle folder")
    comp.add_argument(
        "--target",
        action="append",
        help="host (default), all, or a triple; repeat for several",
    )
    comp.add_argument("--name", help="model name recorded in the manifest (default: file stem)")
    comp.add_argument(
        "--backend",
        choices=("kernel", "tl2cgen"),  # compile.BACKENDS; literal so --help imports nothing
        default="kernel",
        help="code generator: kernel (the default: the forest as tables walked by one "
        "branch-free kernel) or tl2cgen (nested if-else C, the reference; also for models "
        "the kernel refuses)",
    )
    comp.add_argument(
        "--trees",
        choices=("all", "best"),  # compile.source.TREE_CHOICES
        default="all",
        help="boosting rounds to compile when the model records early stopping: all (the "
        "default, as Booster.predict) or best (up to best_iteration, as XGBRegressor.predict)",
    )
    comp.add_argument("-j", "--jobs", type=int, help="parallel compiler processes (default: cores)")
    comp.add_argument("--no-verify", action="store_true", help="skip the parity check vs XGBoost")
    comp.add_argument("--keep-sources", type=_path, help="keep the generated C in this folder")
    comp.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not just its line"
    )
    comp.set_defaults(handler=_compile)

    pred = commands.add_parser(
        "predict", formatter_class=_HELP, help="predict rows from a JSON file with a bundle"
    )
    pred.add_argument("bundle", type=_path)
    pred.add_argument(
        "input",
        help="JSON file ('-' for stdin): a list of objects keyed by feature name, "
        "a list of arrays in model order, or a Lambda-style event",
    )
    pred.add_argument("--margin", action="store_true", help="raw scores, no transform")
    pred.add_argument("--target", help="load the library of this target (default: this machine)")
    pred.set_defaults(handler=_predict)

    pack = commands.add_parser(
        "package",
        formatter_class=_HELP,
        help="package a bundle as Greengrass components: the model (NAME.Model) and the "
        "inference server (NAME); or, with --lambda, as AWS Lambda zips and their template",
    )
    pack.add_argument("bundle", type=_path)
    pack.add_argument("-o", "--output", required=True, type=_path, help="e.g. greengrass-build")
    # Required for Greengrass (checked in _package): --lambda takes neither.
    pack.add_argument(
        "--name", help="component name, e.g. com.example.WineQuality (required without --lambda)"
    )
    pack.add_argument("--version", help="component version, e.g. 1.0.0 (required without --lambda)")
    pack.add_argument("--model-version", help="the model component's version (default: --version)")
    parts = pack.add_mutually_exclusive_group()
    parts.add_argument(
        "--model-only",
        action="store_const",
        const="model",
        dest="only",
        help="only the model component (a new model for the same runtime)",
    )
    parts.add_argument(
        "--runtime-only",
        action="store_const",
        const="runtime",
        dest="only",
        help="only the inference component (a new runtime for the same model)",
    )
    pack.add_argument(
        "--gdk",
        action="store_true",
        help="write each component as a GDK CLI project, OUTPUT/<component name>/, for "
        "`gdk component build` and `gdk component publish`",
    )
    pack.add_argument("--publisher", default="edgeboost", help="the recipes' ComponentPublisher")
    pack.add_argument("--description", help="the inference recipe's ComponentDescription")
    from edgeboost.runtime.server import ServerConfig

    served = ServerConfig()  # the server's defaults: the recipe's configuration starts there
    for option, default in (
        ("--request-topic", served.request_topic),
        ("--response-topic", served.response_topic),
        ("--legacy-request-topic", served.legacy_request_topic),
        ("--legacy-response-topic", served.legacy_response_topic),
    ):
        pack.add_argument(option, default=default, help="the component's configuration")
    pack.add_argument(
        "--artifact-uri-prefix",
        default="s3://REPLACE-WITH-YOUR-BUCKET",
        help="where the zips are uploaded for a cloud deployment",
    )
    pack.add_argument(
        "--consumer-requests",
        type=_path,
        help="also package the example consumer component, sending these records (JSON list)",
    )
    aws = pack.add_argument_group("AWS Lambda (instead of Greengrass components)")
    aws.add_argument(
        "--lambda",
        action="store_true",
        dest="aws_lambda",
        help="write one Lambda deployment zip per architecture (x86_64, arm64) and a "
        "CloudFormation template.yaml for it, behind a Function URL",
    )
    aws.add_argument(
        "--lambda-public",
        action="store_true",
        help="the Function URL takes unauthenticated requests (AuthType NONE; default AWS_IAM)",
    )
    aws.add_argument(
        "--lambda-runtime",
        choices=("python3.13", "python3.12"),  # recipes.lambda_package.RUNTIMES
        default="python3.13",
        help="the Lambda runtime the zips are built for",
    )
    pack.set_defaults(handler=_package)

    demo = commands.add_parser(
        "demo",
        formatter_class=_HELP,
        help="run IPC server, inference component and example consumer on this machine",
    )
    demo.add_argument("bundle", type=_path)
    demo.add_argument("--requests", required=True, type=_path, help="JSON list of records to send")
    demo.add_argument("--repeat", type=int, default=1, help="times to send each record")
    demo.add_argument(
        "--ipc-server",
        choices=("broker", "greengrass-lite"),
        default="broker",
        help="broker (the default: edgeboost's local broker, needs nothing else) or "
        "greengrass-lite (AWS's nucleus lite, built from --ggl-source on first use; needs root)",
    )
    demo.add_argument(
        "--ggl-source",
        type=_path,
        metavar="TARBALL",
        help="nucleus lite's ggl-src-*.tar.xz (default: $EDGEBOOST_GGL_SOURCE, else "
        "../shared/greengrass-lite/ beside this checkout)",
    )
    demo.set_defaults(handler=_demo)

    # The broker is a development tool: device zips do not ship it.
    add_broker_arguments = _host_only_arguments("edgeboost.broker.cli")
    if add_broker_arguments is not None:
        broker = commands.add_parser(
            "broker",
            formatter_class=_HELP,
            help="local Greengrass IPC broker, for running components on a laptop",
        )
        add_broker_arguments(broker)
        broker.set_defaults(handler=_broker)

    add_bench_arguments = _host_only_arguments("edgeboost.benchmarks.cli")  # as the broker
    if add_bench_arguments is not None:
        bench = commands.add_parser(
            "bench", formatter_class=_HELP, help="benchmark report: speed, memory, size, parity"
        )
        add_bench_arguments(bench)
        bench.set_defaults(handler=_bench)

    serve = commands.add_parser(
        "serve", formatter_class=_HELP, help="answer requests over Greengrass IPC pub/sub"
    )
    # serve's paths stay strings: the runtime takes them as they are (see _path).
    serve.add_argument("bundle", nargs="?", help="bundle folder (or use --model-component)")
    model = serve.add_argument_group("model component (instead of BUNDLE)")
    model.add_argument(
        "--model-component",
        metavar="NAME",
        help="load the bundle named by this Greengrass component's Bundle configuration, and "
        "swap in each new version without a restart (built-in transport)",
    )
    model.add_argument(
        "--model-path",
        metavar="DIR",
        help="the folder of that component's versions: "
        "{kernel:rootPath}/packages/artifacts-unarchived/NAME",
    )
    from edgeboost.runtime.component import MAX_UPDATE_DEFER_S

    model.add_argument(
        "--max-update-defer",
        type=float,
        default=MAX_UPDATE_DEFER_S,
        metavar="SECONDS",
        help="how long a deployment may wait for the requests in flight (DeferComponentUpdate "
        "while some are; 0: never waits)",
    )
    _add_server_options(serve)
    serve.set_defaults(handler=_serve)
    return parser


def _host_only_arguments(module: str) -> Callable[[argparse.ArgumentParser], None] | None:
    """The ``add_arguments`` of a host-only subcommand's module; None where it is not there."""
    try:
        found = __import__(module, fromlist=["add_arguments"])
        adder: Callable[[argparse.ArgumentParser], None] = found.add_arguments
    except ImportError:
        return None
    return adder


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    from edgeboost.runtime.protocol import Limits
    from edgeboost.runtime.server import ServerConfig

    defaults, limits = ServerConfig(), Limits()
    topics = parser.add_argument_group("topics ({iot:thingName} is this device's thing name)")
    topics.add_argument(
        "--request-topic", default=defaults.request_topic, help="requests arrive here"
    )
    topics.add_argument(
        "--response-topic",
        default=defaults.response_topic,
        help="replies go here (or to a reply_to below it)",
    )
    topics.add_argument(
        "--legacy-request-topic",
        default=defaults.legacy_request_topic,
        help="topic of old Lambda-style requests ('' disables compatibility)",
    )
    topics.add_argument(
        "--legacy-response-topic",
        default=defaults.legacy_response_topic,
        help="replies to old Lambda-style requests go here",
    )
    tuning = parser.add_argument_group("limits")
    tuning.add_argument(
        "--max-payload-bytes",
        type=int,
        default=limits.max_payload_bytes,
        help="larger requests get a too_large error",
    )
    tuning.add_argument(
        "--max-reply-bytes",
        type=int,
        default=limits.max_reply_bytes,
        help="larger replies become a too_large error (nucleus lite: 7000)",
    )
    tuning.add_argument(
        "--max-rows", type=int, default=limits.max_rows, help="rows per request, at most"
    )
    tuning.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help="requests waiting for a worker; beyond it they are answered 'overloaded'",
    )
    tuning.add_argument(
        "--overload-queue-size",
        type=int,
        default=defaults.overload_queue_size,
        help="requests waiting for their 'overloaded' reply; beyond it they are shed (counted)",
    )
    tuning.add_argument(
        "--workers", type=int, default=defaults.workers, help="threads answering requests"
    )
    tuning.add_argument(
        "--stats-interval",
        type=float,
        default=defaults.stats_interval_s,
        help="seconds between two stats lines",
    )
    tuning.add_argument(
        "--shutdown-timeout",
        type=float,
        default=defaults.shutdown_timeout_s,
        help="seconds from SIGTERM to exit (the Nucleus SIGKILLs 5 s after SIGTERM)",
    )
    parser.add_argument("--target", help="load the library of this target (default: this machine)")
    parser.add_argument(
        "--transport",
        choices=("builtin", "awsiotsdk"),
        default="builtin",
        help="Greengrass IPC client: builtin (standard library only) or awsiotsdk (AWS's "
        "client; needs pip install awsiotsdk)",
    )


def server_config(args: argparse.Namespace) -> Any:
    from edgeboost.runtime.component import substitute_thing_name as thing
    from edgeboost.runtime.protocol import Limits
    from edgeboost.runtime.server import ServerConfig

    return ServerConfig(
        request_topic=thing(args.request_topic),
        response_topic=thing(args.response_topic),
        legacy_request_topic=thing(args.legacy_request_topic) or None,
        legacy_response_topic=thing(args.legacy_response_topic),
        limits=Limits(
            max_payload_bytes=args.max_payload_bytes,
            max_rows=args.max_rows,
            max_reply_bytes=args.max_reply_bytes,
        ),
        queue_size=args.queue_size,
        overload_queue_size=args.overload_queue_size,
        workers=args.workers,
        stats_interval_s=args.stats_interval,
        shutdown_timeout_s=args.shutdown_timeout,
    )


def _train(args: argparse.Namespace) -> int:
    from edgeboost.training.train import train_wine_quality

    if args.output.suffix not in (".json", ".ubj"):
        raise SystemExit(f"edgeboost train: error: {args.output} must end in .json or .ubj")
    if args.trials is not None and args.trials < 1:
        raise SystemExit("edgeboost train: error: --trials must be at least 1")

    report = train_wine_quality(args.data, args.output, trials=args.trials, seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from edgeboost.compile import compile_bundle

    compile_bundle(
        args.model,
        args.output,
        targets=args.target or ["host"],
        name=args.name,
        jobs=args.jobs,
        verify=not args.no_verify,
        keep_sources=args.keep_sources,
        backend=args.backend,
        trees=args.trees,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(args.output)
    return 0


def _package(args: argparse.Namespace) -> int:
    if args.aws_lambda:
        return _package_lambda(args)
    if args.lambda_public:
        raise SystemExit("edgeboost package: error: --lambda-public goes with --lambda")
    if args.name is None or args.version is None:
        raise SystemExit("edgeboost package: error: --name and --version are required")
    from edgeboost.recipes import ComponentOptions, package_bundle

    options = ComponentOptions(
        name=args.name,
        version=args.version,
        publisher=args.publisher,
        description=args.description,
        request_topic=args.request_topic,
        response_topic=args.response_topic,
        legacy_request_topic=args.legacy_request_topic,
        legacy_response_topic=args.legacy_response_topic,
        artifact_uri_prefix=args.artifact_uri_prefix,
        model_version=args.model_version,
    )
    package = package_bundle(
        args.bundle,
        args.output,
        options,
        consumer_requests=args.consumer_requests,
        only=args.only,
        gdk=args.gdk,
    )
    for path in package.files():
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


def _package_lambda(args: argparse.Namespace) -> int:
    greengrass = [
        flag
        for flag, given in (
            ("--name", args.name),
            ("--version", args.version),
            ("--model-version", args.model_version),
            ("--model-only/--runtime-only", args.only),
            ("--gdk", args.gdk),
            ("--consumer-requests", args.consumer_requests),
        )
        if given
    ]
    if greengrass:
        given = ", ".join(greengrass)
        raise SystemExit(f"edgeboost package: error: {given}: Greengrass options, not --lambda")
    from edgeboost.recipes.lambda_package import package_lambda

    package = package_lambda(
        args.bundle, args.output, runtime=args.lambda_runtime, public=args.lambda_public
    )
    for path in package.files():
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edgeboost.demo import run_demo

    return run_demo(
        args.bundle,
        args.requests,
        repeat=args.repeat,
        ipc_server=args.ipc_server,
        ggl_source=args.ggl_source,
    )


def _bench(args: argparse.Namespace) -> int:
    from edgeboost.benchmarks.cli import run

    return run(args)


def _broker(args: argparse.Namespace) -> int:
    from edgeboost.broker.cli import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from edgeboost.runtime import Model
    from edgeboost.runtime.server import InferenceServer

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if (args.bundle is None) == (args.model_component is None):
        raise SystemExit("edgeboost serve: error: give a BUNDLE or --model-component, not both")
    if not 0 <= args.max_update_defer < float("inf"):
        raise SystemExit("edgeboost serve: error: --max-update-defer must be 0 or more seconds")
    component = None
    if args.model_component is not None:
        from edgeboost.runtime.component import ModelComponent, fetch_configuration

        if args.transport != "builtin" or args.model_path is None:
            raise SystemExit(
                "edgeboost serve: error: --model-component needs --model-path and the "
                "built-in transport"
            )
        component = ModelComponent(args.model_component, args.model_path, target=args.target)
        try:
            model = component.load(fetch_configuration(args.model_component, ["Bundle"]))
        except Exception as exc:
            from edgeboost.runtime.component import report_errored

            report_errored(exc)  # the Nucleus learns of it before the exit status
            raise
    else:
        model = Model.load(args.bundle, target=args.target)
    if args.transport == "awsiotsdk":
        from edgeboost.runtime.greengrass import GreengrassTransport

        server = InferenceServer(model, GreengrassTransport(), server_config(args))
        status = server.run(stop)
    else:
        from edgeboost.runtime.component import ComponentLife
        from edgeboost.runtime.ipc_transport import BuiltinTransport

        builtin = BuiltinTransport()
        server = InferenceServer(model, builtin, server_config(args))
        # A deployed component follows its model component and its configuration.
        life = None
        if component is not None:
            life = ComponentLife(
                server, builtin, component, max_update_defer_s=args.max_update_defer
            )
        status = server.run(stop, on_serving=life.start if life is not None else None)
        if life is not None and server.fatal is not None:
            from edgeboost.runtime.component import report_errored

            report_errored(server.fatal)
    # Exit now, whatever a stuck thread is doing: the Nucleus SIGKILLs 5 s after SIGTERM, and
    # interpreter shutdown would wait on the IPC client's native threads.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _predict(args: argparse.Namespace) -> int:
    from edgeboost.runtime import Model, strict_json
    from edgeboost.runtime.lambda_handler import decode_event

    if args.input == "-":
        raw = sys.stdin.buffer.read()
    else:
        with open(args.input, "rb") as f:
            raw = f.read()
    document: Any = strict_json.loads(raw)
    rows = decode_event(document) if isinstance(document, dict) else document
    model = Model.load(args.bundle, target=args.target)
    print(json.dumps(model.predict(rows, margin=args.margin)))
    return 0
