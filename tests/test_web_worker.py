"""The web server's worker class (config/workers.py), served as config/gunicorn.py serves the
app: a worker whose threads are all busy leaves new connections to a worker with a free one,
so a burst of clients is spread over the workers and stays spread (connections are kept
alive)."""

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _served(threads: int) -> Iterator[int]:
    """tests.slow_app under gunicorn with our configuration: two workers of `threads`
    threads each, on a free port (yielded) once both workers answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WEB_CONCURRENCY": "2", "WEB_THREADS": str(threads)}
    command = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py"]
    command += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
        [*command, "tests.slow_app:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                probe.request("GET", "/")
                probe.getresponse().read()
                probe.close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.communicate()[1].decode()[-2000:]) from None
                time.sleep(0.1)
        time.sleep(1.0)  # the second worker up too
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _burst(port: int, n: int, *, seconds: float, clients: list | None = None) -> list[str]:
    """n requests sent at once, each on its own connection (new ones, or `clients`), each
    holding a thread for `seconds`; the pid that served each."""
    clients = clients or [
        http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(n)
    ]
    served: list = [None] * n

    def ask(i: int) -> None:
        try:
            clients[i].request("GET", f"/?{seconds}")
            served[i] = clients[i].getresponse().read().decode()
        except OSError as error:
            served[i] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in served:
        if isinstance(answer, OSError):
            raise answer
    return served


def test_a_worker_with_every_thread_busy_leaves_new_connections_to_the_other():
    with _served(threads=1) as port:
        for _ in range(6):
            clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
            served = _burst(port, 2, seconds=0.3, clients=clients)
            for client in clients:
                client.close()
            assert len(set(served)) == 2, served  # one each, both at once


def test_a_burst_of_clients_is_spread_over_the_workers_and_stays_spread():
    with _served(threads=2) as port:
        clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(4)]
        first = _burst(port, 4, seconds=0.5, clients=clients)
        again = _burst(port, 4, seconds=0.1, clients=clients)  # the same connections
        for client in clients:
            client.close()

    assert sorted(Counter(first).values()) == [2, 2], first  # two clients per worker
    assert again == first  # each stayed with its worker
