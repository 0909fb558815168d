# One image for the web app and the worker; the worker is given the GPU by docker-compose.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY model model
COPY annotation annotation
COPY backend backend
COPY frontend frontend
RUN pip install --no-cache-dir -e ".[postgres]"
ENV AMBIENT_DATA=/data
EXPOSE 8000
CMD ["ambient", "serve", "--host", "0.0.0.0", "--port", "8000"]
