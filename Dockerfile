# The image every BAR Federation service runs: the coordinator, its Celery workers and contributor nodes.
#
#   docker build -t barfed .                                                     # CPU-only torch (the default)
#   docker build -t barfed-gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # a CUDA build
#   docker build -t barfed-gpu --build-arg TORCH_INDEX= .                        # PyPI's wheel (carries CUDA)
#
# torch goes in first, pinned, from TORCH_INDEX, so `pip install .` keeps it (the project asks only torch>=2.6)
# and a CPU image never downloads CUDA libraries. docker-compose.yml builds this file; see README, "Deploy".
# One image for every service, so it installs the extras of both roles compose runs (pyproject.toml): `coordinator`
# (serve, the Celery workers, release builds) and `node` (the organizations' nodes).
FROM python:3.11-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

RUN pip install --no-cache-dir "$TORCH" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY protocol ./protocol
COPY bar_model ./bar_model
COPY contributor_node ./contributor_node
COPY coordinator ./coordinator
COPY barfed ./barfed
RUN pip install --no-cache-dir ".[node,coordinator]"

# Non-root. The directories docker-compose.yml mounts named volumes on exist here, owned by this user, so a new
# volume starts with that owner: the coordinator's home (keys, registry files, blob store, jobs), its releases,
# the public files (CA certificate, release key) nodes read, and a node's home.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/barfed --shell /usr/sbin/nologin barfed \
    && mkdir -p /var/lib/barfed/releases /var/lib/barfed/pki /var/lib/barfed-public /var/lib/barfed-node \
        /var/lib/barfed-release-keys \
    && chown -R barfed:barfed /var/lib/barfed /var/lib/barfed-public /var/lib/barfed-node /var/lib/barfed-release-keys
USER barfed
WORKDIR /home/barfed

EXPOSE 50051 50052 8443
ENTRYPOINT ["barfed"]
CMD ["--help"]
