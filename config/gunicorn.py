"""gunicorn settings for the web app, shared by scripts/serve.sh (make run), the Dockerfile and
docker-compose.yml: threaded workers that keep connections alive, as the benchmarks serve
(docs/benchmarks.md). A mobile app makes several calls in a row, and a kept-alive connection
saves a TCP handshake on each; the threads let a worker answer another request while one waits
for PostgreSQL."""

import os

wsgi_app = "config.wsgi:application"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = 30
