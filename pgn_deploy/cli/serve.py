"""pgn-serve: serve a grafted model with PyTriton (a Triton server on this host) until interrupted."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pgn_deploy.cli.common import make_parser, run_cli
from pgn_deploy.engines.serve import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, PGNServer


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-serve MODEL``: serve until interrupted."""
    parser = make_parser("pgn-serve", "Serve a grafted model with PyTriton (Triton on this host).", json_flag=False)
    parser.add_argument("model", help="grafted ONNX model or TensorRT plan")
    parser.add_argument("--name", default="pgn", help="Triton model name (default pgn)")
    parser.add_argument("--backend", default="auto", help="runtime backend (default auto)")
    parser.add_argument("--max-batch", type=int, default=8, help="Triton max batch size (default 8)")
    parser.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    parser.add_argument("--max-queue-delay-us", type=int, default=1000, help="batcher wait in microseconds")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--metrics-port", type=int, help="enable Prometheus metrics on this port")
    parser.add_argument("--max-pixels", type=int,
                        help="refuse images above this many pixels (height x width) before anything allocates "
                             "them (default: derived from the model's outputs and this host's memory)")

    def command(args: argparse.Namespace) -> int:
        server = PGNServer(args.model, name=args.name, backend=args.backend, max_batch=args.max_batch,
                           instances=args.instances, max_queue_delay_us=args.max_queue_delay_us,
                           host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                           metrics_port=args.metrics_port, max_pixels=args.max_pixels)
        # SIGINT (Ctrl-C) and SIGTERM (a service manager's stop) shut down cleanly, whatever the
        # parent left: a background job of a non-interactive shell starts with SIGINT ignored,
        # and an ignored or blocked signal is inherited through exec.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        with server:
            print(json.dumps({"serving": args.name, "grpc": f"{args.host}:{args.grpc_port}",
                              "http": f"{args.host}:{args.http_port}", "max_pixels": server.max_pixels}),
                  flush=True)
            server.wait()
        return 0

    return run_cli(parser, command, argv)


if __name__ == "__main__":
    sys.exit(main())
