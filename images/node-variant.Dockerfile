# syntax=docker/dockerfile:1
# Node images for the rolling-upgrade scenario of e2e/tests/day2.rs, which
# moves a KeyraftCluster to `spec.version: 0.2.0` and then to `0.3.0-broken`.
# The simulator maps those tags to wrapper scripts; on kind they are these
# images, layered on the node image built by images/node.Dockerfile (BASE).
# No compiling: each stage only sets one KEYRAFT_* variable, which keyraft-node
# reads like its flag (node/src/config.rs, clap `env = ...`).
#
#   docker build -f images/node-variant.Dockerfile --build-arg BASE=keyraft/keyraft-node:0.1.0 \
#     --target v0.2.0 -t keyraft/keyraft-node:0.2.0 .
#   docker build -f images/node-variant.Dockerfile --build-arg BASE=keyraft/keyraft-node:0.1.0 \
#     --target v0.3.0-broken -t keyraft/keyraft-node:0.3.0-broken .
#
# Only variables the operator leaves alone work here: the pod's `env`
# (KEYRAFT_NAME, _CLUSTER, _DATA_DIR, _LISTEN, _ADVERTISE, _HTTP_LISTEN, _JOIN,
# _ZONE; operator/src/builders/statefulset.rs) and its `envFrom` ConfigMap
# (KEYRAFT_PARTITIONS, _REPLICATION_FACTOR, _DEFAULT_READ, _MAX_KEY_BYTES,
# _MAX_VALUE_BYTES; operator/src/builders/objects.rs) override an image's ENV.
# BASE has no default: the tag of the base node image is KEYRAFT_VERSION
# (make images, e2e/kind/kind-up.sh). It must be in the local image store
# (the default `docker` buildx driver), not pulled.

ARG BASE

# A build that reports version 0.2.0 (--reported-version); the tests read it
# back from the nodes' status.
FROM ${BASE} AS v0.2.0
ENV KEYRAFT_VERSION=0.2.0

# A build whose pods never start: KEYRAFT_WAL_SEGMENT_MB is a u64 setting
# (--wal-segment-mb) the operator does not set, so the node exits at start-up
# with clap's "invalid value 'not-a-number' for '--wal-segment-mb
# <WAL_SEGMENT_MB>': invalid digit found in string" (exit code 2) and the pod
# goes into CrashLoopBackOff, never ready.
FROM ${BASE} AS v0.3.0-broken
ENV KEYRAFT_VERSION=0.3.0-broken \
    KEYRAFT_WAL_SEGMENT_MB=not-a-number
