# syntax=docker/dockerfile:1
# One image for every mmserve process: the API (the default command), the async workers,
# the beat and the stream consumers differ only in the arguments given to `mmserve`.
#
#   docker build -t mmserve .
#   docker run -p 8080:8080 mmserve          # mmserve serve --host 0.0.0.0 --port 8080
#   docker run mmserve worker                # any other subcommand: mmserve worker

# -- the wheel of mmserve itself ----------------------------------------------------------
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is the package's long description: the build needs it.
COPY pyproject.toml README.md ./
COPY serving ./serving
COPY workers ./workers
COPY batch ./batch
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- the image ----------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without a user database.
RUN useradd --system --uid 10001 --gid 0 --create-home --home-dir /home/mmserve mmserve

# The dependencies, from pyproject.toml alone, in a layer of their own: a code change does
# not reinstall them. RUNTIMES names the model runtimes' extras to install with them
# (docker build --build-arg RUNTIMES="xgboost" ...; "" for scikit-learn alone).
ARG RUNTIMES="xgboost lightgbm onnx"
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import sys, tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + [d for e in sys.argv[1:] for d in p['optional-dependencies'][e]]))" $RUNTIMES \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# The working directory holds the default local store (./.mmserve); compose and the
# Kubernetes manifests point MMSERVE_STORE_URL at S3 instead.
WORKDIR /srv/mmserve
RUN chown 10001:0 /srv/mmserve
USER 10001
EXPOSE 8080

# Docker's own check, of the default command (the API): ready once the provisioned models
# are loaded. There is no curl in the image; Python's urllib asks. Compose and Kubernetes
# give every other process a check of its own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]

ENTRYPOINT ["mmserve"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
