# cxr-monai on a CUDA build of PyTorch. Build (USER_UID/USER_GID: yours, so that what the container writes to a
# mounted runs/ belongs to you; both default to 1000):
#   docker build --build-arg USER_UID=$(id -u) --build-arg USER_GID=$(id -g) -t cxr-monai .
# Run a bundle on the GPUs, data mounted read-only, outputs and MLflow store in /workspace/runs:
#   mkdir -p runs && docker run --gpus all --ipc=host --rm -v /data/ChestX-ray14:/data:ro \
#     -v $PWD/runs:/workspace/runs cxr-monai \
#     python -m monai.bundle run --config_file bundles/context_encoder/configs/train.json \
#       --bundle_root bundles/context_encoder --dataset_dir /data --datalist /data/datalist.json \
#       --output_dir /workspace/runs/context_encoder
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# The container runs as this unprivileged user (never UID 0). --non-unique: the base image may hold the UID or GID.
ARG USER_UID=1000
ARG USER_GID=1000
RUN test "${USER_UID}" -ne 0 || { echo "USER_UID=0 would run the container as root" >&2; exit 1; } \
    && groupadd --non-unique --gid "${USER_GID}" cxr \
    && useradd --non-unique --uid "${USER_UID}" --gid "${USER_GID}" --create-home --shell /bin/bash cxr \
    && install -d -o cxr -g cxr /workspace/cxr-monai /workspace/runs
WORKDIR /workspace/cxr-monai

# Same install as the README's `make` targets, minus the CPU torch wheel, with every version the bundle's
# metadata.json states pinned (it is the one list of them; tests/test_packaging.py checks it against this base
# image's torch and setup.cfg): the base image's CUDA torch must be metadata.json's pytorch_version, it is kept as
# a constraint (if anything needed another torch, the build fails here instead of pip quietly pulling a multi-GB
# one), and after the install every pinned package is checked. The install is root's; the user only reads it.
# The `detection` extra (torchvision, for bundles/localisation) is the base image's own CUDA torchvision, paired
# with its torch: it is kept as a constraint too, so pip neither replaces it nor fetches another torch for it.
COPY bundles/context_encoder/configs/metadata.json /tmp/bundle-metadata.json
COPY setup.cfg pyproject.toml README.md ./
COPY cxr_monai ./cxr_monai
RUN python -c "import json, torch, torchvision; \
meta = json.load(open('/tmp/bundle-metadata.json')); \
pins = {'monai': meta['monai_version'], 'numpy': meta['numpy_version'], **meta['required_packages_version']}; \
pins.pop('cxr-monai'); \
base = torch.__version__.split('+')[0]; \
assert base == meta['pytorch_version'], ('base image torch', base, 'metadata.json', meta['pytorch_version']); \
lines = [f'torch=={torch.__version__}', f'torchvision=={torchvision.__version__}'] + [f'{n}=={v}' for n, v in pins.items()]; \
open('/tmp/constraints.txt', 'w').write(''.join(line + '\n' for line in lines)); \
json.dump(pins, open('/tmp/pins.json', 'w'))" \
    && cat /tmp/constraints.txt \
    && python -m pip install -c /tmp/constraints.txt -e ".[test,detection]" \
    && python -c "import json, importlib.metadata as md, torch, torchvision, monai, cxr_monai; \
assert torch.version.cuda, 'not a CUDA build'; \
wrong = {n: md.version(n) for n, v in json.load(open('/tmp/pins.json')).items() if md.version(n) != v}; \
assert not wrong, ('installed versions differ from metadata.json', wrong); \
print(torch.__version__, torchvision.__version__, torch.version.cuda, monai.__version__)" \
    && rm /tmp/bundle-metadata.json /tmp/constraints.txt /tmp/pins.json

# Owned by the user: a bundle run without --output_dir writes under its bundle_root, MLflow and pytest under here.
COPY --chown=cxr:cxr bundles ./bundles
COPY --chown=cxr:cxr data_lists ./data_lists
COPY --chown=cxr:cxr tests ./tests
COPY --chown=cxr:cxr bench ./bench
COPY --chown=cxr:cxr Makefile ./

USER cxr

# `python -m monai.bundle` and `python -m cxr_monai` both work from here.
CMD ["python", "-m", "cxr_monai", "--help"]
