# syntax=docker/dockerfile:1
# keyraft-operator, as the Helm chart runs it.
#
#   docker build -f images/operator.Dockerfile -t keyraft/keyraft-operator:0.1.0 .
#
# charts/keyraft-operator/templates/deployment.yaml gives no command, only
# `args: [run]`, so the binary is the entrypoint; its settings come from
# KEYRAFT_OPERATOR_* / POD_* variables, and the chart runs it as UID 65532
# (distroless `nonroot`) with a read-only root filesystem.
# Build context: the repository root (see .dockerignore). Needs BuildKit.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p keyraft-operator \
    && install -D -m 0755 target/release/keyraft-operator /out/keyraft-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keyraft-operator /usr/local/bin/keyraft-operator
# 8080: /healthz, /readyz, /metrics (KEYRAFT_OPERATOR_HTTP).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keyraft-operator"]
CMD ["run"]
