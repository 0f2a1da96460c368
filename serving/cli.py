"""``lambdarec serve``: the serving API under uvicorn, in one process or several (``--workers``)."""

from __future__ import annotations

import argparse

from lambdarec.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="Bind address (default: settings.serve_host).")
    parser.add_argument("--port", type=int, help="Port (default: settings.serve_port).")
    parser.add_argument("--workers", type=int,
                        help="Serving processes on the port, 0 = one per core (default: settings.serve_workers).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def command(args: argparse.Namespace, settings: Settings) -> int:
    from serving.logs import configure_logging
    from serving.workers import run_workers, tune_process, worker_count

    configure_logging(args.log_level.upper())
    host, port = args.host or settings.serve_host, args.port or settings.serve_port
    workers = worker_count(settings.serve_workers if args.workers is None else args.workers)
    if workers > 1:
        run_workers(settings, host, port, workers, args.log_level)
        return 0
    import uvicorn

    from serving.app import create_app

    app = create_app(settings)
    tune_process()
    uvicorn.run(app, host=host, port=port, log_config=None,
                access_log=False)  # RequestMetrics logs each request as JSON
    return 0
