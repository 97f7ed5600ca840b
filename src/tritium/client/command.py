"""What the `tritium client` and `tritium bench` commands share: reading
--sampling-parameters, connecting to the endpoint, and running to an exit status."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any

from tritium.client.transports import Transport, TransportError, TransportOptions, make_transport


def parse_sampling_parameters(text: str) -> dict[str, Any]:
    """The --sampling-parameters JSON; ValueError unless it is an object."""
    params = json.loads(text)
    if not isinstance(params, dict):
        raise ValueError("--sampling-parameters must be a JSON object")
    return params


async def connect(backend: str, options: TransportOptions) -> Transport | None:
    """The started transport, or None once the reason it cannot start is printed (the
    commands then exit with status 2)."""
    transport = make_transport(backend, options)
    try:
        await transport.start()
    except TransportError as error:
        print(f"error: {error}", file=sys.stderr)
        await transport.close()
        return None
    return transport


def run_command(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine to its exit status; Ctrl-C exits with 130."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
