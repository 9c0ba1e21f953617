# syntax=docker/dockerfile:1
# Sluice's images, one target per binary:
#
#   docker build --target gateway  -t ghcr.io/sluice-dev/sluice-gateway:0.1.0  .
#   docker build --target operator -t ghcr.io/sluice-dev/sluice-operator:0.1.0 .
#   docker build --target sim      -t ghcr.io/sluice-dev/sluice-sim:0.1.0      .
#
# (`buildah build --target ...` and `podman build --target ...` read it the same way.) The
# builder is pinned; the runtime is distroless `cc` (glibc, libgcc, CA certificates, no shell,
# no package manager) running as uid 65532. TLS is rustls with aws-lc linked statically, so the
# binaries need nothing else. See docs/install.md.

ARG RUST_VERSION=1.95.0
ARG DEBIAN=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN} AS build
# aws-lc-sys builds its C with cmake when no prebuilt object fits the target.
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang perl make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-gateway -p sluice-operator -p sluice-sim --bins \
    && mkdir -p /out \
    && cp target/release/sluice-gateway target/release/sluice-operator target/release/sluice-sim /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/sluice-dev/sluice" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.vendor="Sluice"
USER 65532:65532

FROM runtime AS gateway
LABEL org.opencontainers.image.title="sluice-gateway" \
      org.opencontainers.image.description="Sluice's data plane: a multi-tenant LLM API gateway"
COPY --from=build /out/sluice-gateway /usr/local/bin/sluice-gateway
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/sluice-gateway"]

FROM runtime AS operator
LABEL org.opencontainers.image.title="sluice-operator" \
      org.opencontainers.image.description="Sluice's Kubernetes operator"
COPY --from=build /out/sluice-operator /usr/local/bin/sluice-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice-operator"]

FROM runtime AS sim
LABEL org.opencontainers.image.title="sluice-sim" \
      org.opencontainers.image.description="A simulated LLM server speaking the OpenAI, Anthropic and Gemini formats"
COPY --from=build /out/sluice-sim /usr/local/bin/sluice-sim
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/sluice-sim"]
