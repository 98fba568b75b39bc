# The production image: one image for web (gunicorn), worker and beat (docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUDGE_DATA_DIR=/var/lib/nudges

RUN useradd --system --create-home --home-dir /app nudges \
    && mkdir -p /var/lib/nudges && chown nudges /var/lib/nudges
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY config ./config
COPY core ./core
COPY patients ./patients
COPY safety ./safety
COPY nudges ./nudges
COPY clinicians ./clinicians
COPY privacy ./privacy
COPY demo ./demo
COPY manage.py ./
RUN pip install --no-cache-dir -c constraints.txt . \
    && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput --verbosity 0

USER nudges
EXPOSE 8000
CMD ["gunicorn", "--config", "config/gunicorn.py", "--bind", "0.0.0.0:8000"]
