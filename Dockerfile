# cxr-monai on a CUDA build of PyTorch. Build:   docker build -t cxr-monai .
# Run a bundle on the GPUs, data mounted read-only, outputs and MLflow store in /workspace/runs:
#   docker run --gpus all --ipc=host --rm -v /data/ChestX-ray14:/data:ro -v $PWD/runs:/workspace/runs cxr-monai \
#     python -m monai.bundle run --config_file bundles/context_encoder/configs/train.json \
#       --bundle_root bundles/context_encoder --dataset_dir /data --datalist /data/datalist.json \
#       --output_dir /workspace/runs/context_encoder
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /workspace/cxr-monai

# Same install as the README's `make` targets, minus the CPU torch wheel. The base image's CUDA torch is pinned
# as a constraint: it must satisfy setup.cfg and MONAI (1.6 needs torch >= 2.8; tests/test_packaging.py checks
# this tag), and if it ever did not, the build fails here instead of pip quietly pulling another multi-GB torch.
COPY setup.cfg pyproject.toml README.md ./
COPY cxr_monai ./cxr_monai
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/base-torch.txt \
    && python -m pip install -c /tmp/base-torch.txt -e ".[test]" \
    && python -c "import torch, monai, cxr_monai; assert torch.version.cuda, 'not a CUDA build'; print(torch.__version__, torch.version.cuda, monai.__version__)"

COPY bundles ./bundles
COPY data_lists ./data_lists
COPY tests ./tests
COPY bench ./bench
COPY Makefile ./

# `python -m monai.bundle` and `python -m cxr_monai` both work from here.
CMD ["python", "-m", "cxr_monai", "--help"]
