# cxr-monai on a CUDA build of PyTorch. Build:   docker build -t cxr-monai .
# Run a bundle on the GPUs, data mounted read-only, outputs and MLflow store in /workspace/runs:
#   docker run --gpus all --ipc=host --rm -v /data/ChestX-ray14:/data:ro -v $PWD/runs:/workspace/runs cxr-monai \
#     python -m monai.bundle run --config_file bundles/context_encoder/configs/train.json \
#       --bundle_root bundles/context_encoder --dataset_dir /data --datalist /data/datalist.json \
#       --output_dir /workspace/runs/context_encoder
FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /workspace/cxr-monai

# Same install as the README's `make` targets, minus the CPU torch wheel: the base image's CUDA torch
# satisfies setup.cfg's torch range, so pip keeps it.
COPY setup.cfg pyproject.toml README.md ./
COPY cxr_monai ./cxr_monai
RUN python -m pip install -e ".[test]" && python -c "import torch, monai, cxr_monai; print(torch.__version__, monai.__version__)"

COPY bundles ./bundles
COPY data_lists ./data_lists
COPY tests ./tests
COPY bench ./bench
COPY Makefile ./

# `python -m monai.bundle` and `python -m cxr_monai` both work from here.
CMD ["python", "-m", "cxr_monai", "--help"]
