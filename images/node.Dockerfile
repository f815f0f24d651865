# syntax=docker/dockerfile:1
# keyraft-node, the database node the operator's StatefulSet runs.
#
#   docker build -f images/node.Dockerfile -t keyraft/keyraft-node:0.1.0 .
#
# KeyraftClusters run `<spec.image>:<spec.version>` (default
# keyraft/keyraft-node:<DEFAULT_VERSION of operator/src/crd.rs>) with
# `command: [keyraft-node]`, so the binary sits on the image's PATH. The pod
# (operator/src/builders/statefulset.rs) sets UID/GID 10001, a read-only root
# filesystem, the data volume at /var/lib/keyraft and an emptyDir at /tmp, and
# every setting through KEYRAFT_* variables: the image needs nothing else.
# Build context: the repository root (see .dockerignore). Needs BuildKit.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# .proto files are compiled by protox (api/build.rs): no protoc needed.
# The target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p keyraft-node \
    && install -D -m 0755 target/release/keyraft-node /out/keyraft-node

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keyraft-node /usr/local/bin/keyraft-node
# 7000: gRPC (Kv, Raft, Admin); 8080: /healthz, /readyz, /metrics.
EXPOSE 7000 8080
ENTRYPOINT ["/usr/local/bin/keyraft-node"]
