# syntax=docker/dockerfile:1
#
# A static musl binary in an otherwise empty image.
#   docker build -t configmapwatch:0.1.0 .
#   docker run --rm -v "$PWD/vol:/opt/config:ro" configmapwatch:0.1.0
#
# Where no base image can be pulled, pass an image that already holds a
# static /configmapwatch as the build stage:
#   --build-arg BUILD_STAGE=localhost/configmapwatch-prebuilt
ARG BUILD_STAGE=build

FROM rust:1.88-alpine AS build
WORKDIR /src
COPY . .
# Alpine's Rust targets musl and links statically by default.
RUN cargo build --release --locked --bin configmapwatch \
    && cp target/release/configmapwatch /configmapwatch

FROM ${BUILD_STAGE} AS binary

FROM scratch
COPY --from=binary /configmapwatch /configmapwatch
USER 65532:65532
ENTRYPOINT ["/configmapwatch"]
CMD ["--dir", "/opt/config"]
