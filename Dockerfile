# Headwise image: one image for the `migrate`, `api` and `worker` services of docker-compose.yml.
#
#   docker build -t headwise .                                   # PyPI's default torch wheel (CUDA on amd64)
#   docker build -t headwise --build-arg TORCH_PIP_ARGS="--index-url <a CPU wheel index>" .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG TORCH_VERSION=2.13.0
ARG TORCH_PIP_ARGS=""

RUN useradd --create-home --uid 10001 headwise \
 && mkdir -p /data \
 && chown headwise:headwise /data

WORKDIR /app

# torch first, pinned, so nothing below can pull another build of it.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_PIP_ARGS}

# Dependencies from pyproject.toml in their own layer (source edits do not reinstall them).
COPY pyproject.toml ./
# The core (the client) plus the `server` extra: the image runs the API and the workers.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
deps = p['dependencies'] + p['optional-dependencies']['server']; \
open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps -e . && headwise --help > /dev/null

USER headwise
ENV HEADWISE_DATA_DIR=/data \
    HEADWISE_HOST=0.0.0.0 \
    HEADWISE_PORT=8000
EXPOSE 8000
CMD ["headwise", "api"]
