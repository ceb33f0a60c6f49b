# tilecast server image (CPU). Serves the model repository mounted or copied at /models.
#   docker build -t tilecast . && docker run -p 8500:8500 -v $PWD/models:/models tilecast
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY tilecast tilecast
COPY proto proto
COPY server server
COPY client client
COPY export export
COPY training training
RUN pip install --no-cache-dir ".[server,client]"
COPY models /models
EXPOSE 8500 8502
ENV TILECAST_REPOSITORY=/models TILECAST_HOST=0.0.0.0 TILECAST_PORT=8500
CMD ["tilecast", "serve"]
