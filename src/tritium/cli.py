"""The `tritium` command: serve | client | bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tritium.server.options import ServerOptions

# `tritium serve` with no repository serves the example repository of a source checkout.
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "examples" / "model_repository"


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the inference server (Triton's flags)")
    p.add_argument(
        "--model-repository",
        "--model-store",
        action="append",
        default=[],
        dest="model_repository",
        help="model repository path or URL (repeatable)",
    )
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none")
    p.add_argument("--repository-poll-secs", type=float, default=15.0)
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        help="explicit mode: model to load at start ('*' for all)",
    )
    p.add_argument("--strict-readiness", type=_bool, default=True)
    p.add_argument("--exit-on-error", type=_bool, default=True)
    p.add_argument("--strict-model-config", type=_bool, default=False)
    p.add_argument("--disable-auto-complete-config", action="store_true")
    for proto, port in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        p.add_argument(f"--{proto}-address", default="0.0.0.0")
        p.add_argument(f"--{proto}-port", type=int, default=port)
        p.add_argument(f"--allow-{proto}", type=_bool, default=True)
    p.add_argument("--allow-gpu-metrics", type=_bool, default=True)
    p.add_argument("--allow-cpu-metrics", type=_bool, default=True)
    p.add_argument("--metrics-interval-ms", type=int, default=2000)
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--log-info", type=_bool, default=True)
    p.add_argument("--log-warning", type=_bool, default=True)
    p.add_argument("--log-error", type=_bool, default=True)
    p.add_argument("--log-format", choices=["default", "ISO8601"], default="default")
    p.add_argument("--log-file", default="")
    p.add_argument("--exit-timeout-secs", type=float, default=30.0)
    p.add_argument("--http-max-input-size", type=int, default=64 * 1024 * 1024)
    p.add_argument("--id", default="triton")
    p.add_argument(
        "--backend-config",
        action="append",
        default=[],
        help="backend,setting=value (accepted as Triton does)",
    )
    p.set_defaults(func=_run_serve)


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    repos = args.model_repository or [str(DEFAULT_REPOSITORY)]
    return ServerOptions(
        model_repository=repos,
        model_control_mode=args.model_control_mode,
        repository_poll_secs=args.repository_poll_secs,
        load_model=args.load_model,
        strict_readiness=args.strict_readiness,
        exit_on_error=args.exit_on_error,
        strict_model_config=args.strict_model_config or args.disable_auto_complete_config,
        http_address=args.http_address,
        http_port=args.http_port,
        allow_http=args.allow_http,
        grpc_address=args.grpc_address,
        grpc_port=args.grpc_port,
        allow_grpc=args.allow_grpc,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        allow_metrics=args.allow_metrics,
        allow_gpu_metrics=args.allow_gpu_metrics,
        allow_cpu_metrics=args.allow_cpu_metrics,
        metrics_interval_ms=args.metrics_interval_ms,
        log_verbose=args.log_verbose,
        log_info=args.log_info,
        log_warning=args.log_warning,
        log_error=args.log_error,
        log_format=args.log_format,
        log_file=args.log_file,
        exit_timeout_secs=args.exit_timeout_secs,
        http_max_input_size=args.http_max_input_size,
        id=args.id,
        backend_config=args.backend_config,
    )


def _run_serve(args: argparse.Namespace) -> int:
    from tritium.frontends.launcher import serve

    return serve(options_from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritium", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    # The client and the benchmark register their own subcommands.
    from tritium.client import bench, client

    client.register(subparsers)
    bench.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
