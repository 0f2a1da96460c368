"""``lambdarec serve``: the serving API under uvicorn."""

from __future__ import annotations

import argparse
import sys

from lambdarec.settings import Settings

SWITCH_INTERVAL_S = 0.0005


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="Bind address (default: settings.serve_host).")
    parser.add_argument("--port", type=int, help="Port (default: settings.serve_port).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def command(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from threadpoolctl import threadpool_limits

    from serving.app import create_app
    from serving.logs import configure_logging

    configure_logging(args.log_level.upper())
    app = create_app(settings)
    # One BLAS thread: a request's matrix-vector product is too small to split, and numpy's
    # and scipy's OpenBLAS pools spinning on few cores slow every request (README: measurements).
    threadpool_limits(1, user_api="blas")
    # A model swap prepares the new model's caches on a worker thread beside the requests; numpy
    # drops and retakes the GIL on every call, and with the default switch interval each retake
    # waits behind that thread.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    uvicorn.run(
        app,
        host=args.host or settings.serve_host,
        port=args.port or settings.serve_port,
        log_config=None,
        access_log=False,  # RequestMetrics logs each request as JSON
    )
    return 0
