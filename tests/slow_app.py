"""A WSGI app for tests of the web server's workers: each request takes the time its query
string asks for (seconds), and the answer names the process that served it."""

import os
import time
from collections.abc import Callable, Iterable
from typing import Any


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    time.sleep(float(environ.get("QUERY_STRING") or 0))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
