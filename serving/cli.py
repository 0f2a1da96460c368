"""``lambdarec serve``: the serving API under uvicorn, in one process or several (``--workers``)."""

from __future__ import annotations

import argparse

from lambdarec.settings import Settings

STARTUP_FAILURE = 3  # uvicorn's exit status for a server that never started


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="Bind address (default: settings.serve_host).")
    parser.add_argument("--port", type=int, help="Port (default: settings.serve_port).")
    parser.add_argument("--workers", type=int,
                        help="Serving processes on the port, 0 = one per core (default: settings.serve_workers).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def command(args: argparse.Namespace, settings: Settings) -> int:
    from serving.http_server import fit_open_files, serve, uvicorn_config
    from serving.logs import configure_logging
    from serving.api.security import UnsafeAuth, check_startup
    from serving.workers import dump_stacks_on_usr1, run_workers, tune_process, worker_count

    dump_stacks_on_usr1()
    configure_logging(args.log_level.upper())
    host, port = args.host or settings.serve_host, args.port or settings.serve_port
    try:
        check_startup(settings, host)  # open mode, or no live key, only on loopback
    except UnsafeAuth as exc:
        print(f"serving refuses to start: {exc}")
        return 2
    workers = worker_count(settings.serve_workers if args.workers is None else args.workers)
    fit_open_files(settings.serve_max_connections)
    if workers > 1:
        run_workers(settings, host, port, workers, args.log_level)
        return 0
    from serving.app import create_app

    app = create_app(settings)
    tune_process()
    return 0 if serve(uvicorn_config(settings, app, host, port)) else STARTUP_FAILURE
