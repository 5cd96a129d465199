# kdlab on a CUDA PyTorch image: `docker build -t kdlab .` then
#   docker run --gpus all -v $PWD/runs:/kdlab/runs -v /data:/data kdlab fit -c experiments/...
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /kdlab
COPY pyproject.toml README.md ./
COPY kdlab ./kdlab
COPY experiments ./experiments
# The same install as the README's `make install`: the package with its dev extra.
RUN pip install --no-cache-dir -e '.[dev]'
ENTRYPOINT ["kdlab"]
CMD ["--help"]
