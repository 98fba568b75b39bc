"""gunicorn settings for the web app, shared by scripts/serve.sh (make run), the Dockerfile,
docker-compose.yml and the serving benchmarks: threaded workers that keep connections alive.
A mobile app makes several calls in a row, and a kept-alive connection saves a TCP handshake
on each.

One worker per core: a worker's Python runs on one core at a time, and a worker takes a new
connection only while one of its threads is free (config/workers.py), so that a burst of
clients is spread over the workers. Eight threads each: while one waits for PostgreSQL
another runs, and decision requests that arrive while a decision runs are decided together
in the next round (nudges/services/live.py), which needs them in the same worker. Measured on
two cores (docs/benchmarks.md): 2 x 8 decided 245 requests/s (5.9 ms server CPU each) where
3 x 4 decided 184 (8.7 ms); twelve threads cost the inbox a third more CPU per request."""

import os

wsgi_app = "config.wsgi:application"
worker_class = "config.workers.BalancedThreadWorker"  # gthread, balanced (config/workers.py)
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
threads = int(os.environ.get("WEB_THREADS", "8"))
keepalive = 30
