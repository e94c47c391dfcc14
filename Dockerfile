# meshproxy as a container image: the same console script, ready to be injected
# as a sidecar or run as a gateway.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshproxy ./meshproxy
COPY config ./config
RUN pip install --no-cache-dir . && rm -rf /src/build
# Istio's proxy user and ports: admin 15000, outbound 15001, inbound 15006, health 15021, stats 15090.
RUN useradd --uid 1337 --no-create-home istio-proxy
USER 1337
EXPOSE 15000 15001 15006 15021 15090
ENTRYPOINT ["meshproxy"]
CMD ["--help"]
