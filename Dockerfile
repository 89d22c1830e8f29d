# syntax=docker/dockerfile:1
#
# Two images from one build:
#   docker build -t configmapwatch:0.1.0 .                   # default: a static
#       binary in an otherwise empty image (no shell): logs, webhooks, signals
#   docker build --target exec -t configmapwatch:0.1.0-exec .  # the same binary
#       with a shell, curl and jq, for the README's --exec recipes
#   docker run --rm -v "$PWD/vol:/opt/config:ro" configmapwatch:0.1.0
#
# Where no base image can be pulled, pass images that already hold what the
# stages need: BUILD_STAGE (a static /configmapwatch) and EXEC_BASE (a
# shell, curl and jq).
ARG BUILD_STAGE=build
ARG EXEC_BASE=alpine:3.20

FROM rust:1.89-alpine AS build
WORKDIR /src
COPY . .
# Alpine's Rust targets musl and links statically by default: a static-pie
# binary (PIE is rustc's default for musl; the release profile is in
# Cargo.toml). --target names the musl target whatever the host, as CI does.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin configmapwatch \
    && cp target/x86_64-unknown-linux-musl/release/configmapwatch /configmapwatch

FROM ${BUILD_STAGE} AS binary

# The exec image: what the --exec recipes call (sh, curl, jq).
FROM ${EXEC_BASE} AS exec
# hadolint ignore=DL3018
RUN command -v sh curl jq >/dev/null || apk add --no-cache curl jq
COPY --from=binary /configmapwatch /usr/local/bin/configmapwatch
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/configmapwatch"]
CMD ["--dir", "/opt/config"]

# The default image, built last: the binary and nothing else.
FROM scratch
COPY --from=binary /configmapwatch /configmapwatch
USER 65532:65532
ENTRYPOINT ["/configmapwatch"]
CMD ["--dir", "/opt/config"]
