"""The gunicorn worker class the web app is served with (config/gunicorn.py).

gunicorn's threaded worker accepts every connection it is quick enough to take, busy or not,
and a kept-alive connection stays with the worker that accepted it. A worker's Python runs on
one core at a time, so when a burst of connections lands on one worker (measured: all 16 of a
benchmark's clients on one of two workers, the other idle for the whole run, 175 decisions/s
against 245 with the clients split), its requests queue behind its threads while another core
has nothing to do. This worker takes a new connection only while one of its threads is free;
otherwise the connection waits in the listening socket's backlog for a worker that has one.
Connections it holds already are served as before."""

from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.in_progress = 0  # requests handed to the thread pool and not finished
        super().__init__(*args, **kwargs)

    # ThreadWorker's loop accepts while nr_conns < worker_connections, checked before each
    # wait for events (one accept per wait); with every thread taken it now reads 0.
    @property
    def worker_connections(self) -> int:
        if self.in_progress >= self.cfg.threads:
            return 0
        return self._worker_connections

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._worker_connections = value

    def enqueue_req(self, conn: Any) -> None:
        self.in_progress += 1  # the main thread's loop, like finish_request: no lock needed
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        self.in_progress -= 1
        super().finish_request(conn, fs)
