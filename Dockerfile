# syntax=docker/dockerfile:1
# One image recipe for both binaries of the workspace; the build argument BINARY picks which:
#   docker build --build-arg BINARY=plamatio-api      -t ghcr.io/plamatio/plamatio-api:0.1.0 .
#   docker build --build-arg BINARY=plamatio-operator -t ghcr.io/plamatio/plamatio-operator:0.1.0 .
# Build from the repository root (the workspace is the build context).
# Runtime: distroless cc-debian12 (glibc, libgcc, libssl3, CA certificates), user nonroot (65532),
# the binary at /usr/local/bin/$BINARY and the entrypoint linked to it. No default command: every
# Deployment names it (`serve`/`migrate` for the API, `run` for the operator). The shared libraries the binary links that distroless lacks (zlib, for rdkafka's bundled
# librdkafka) are copied from the builder, found with ldd.
ARG RUST_VERSION=1.95
ARG BINARY=plamatio-api

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG BINARY
# rdkafka's bundled librdkafka is built by its own configure script (no cmake); ssl needs the OpenSSL
# headers and pkg-config, libz the zlib headers (all in the rust:bookworm image; listed to be explicit).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$BINARY" in plamatio-api|plamatio-operator) ;; *) echo "BINARY must be plamatio-api or plamatio-operator" >&2; exit 1 ;; esac \
 && cargo build --release --locked -p "$BINARY" --bin "$BINARY" \
 && install -D -m 0755 "target/release/$BINARY" "/out/usr/local/bin/$BINARY" \
 && ln -s "$BINARY" /out/usr/local/bin/entrypoint
# Copy every linked library except glibc and libgcc (distroless has them) to its real directory.
RUN set -eu; \
    ldd "/out/usr/local/bin/$BINARY"; \
    ldd "/out/usr/local/bin/$BINARY" | awk '$3 ~ /^\// { print $3 }' \
      | grep -Ev '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' \
      | while read -r lib; do \
          dir="$(dirname "$(readlink -f "$lib")")"; \
          mkdir -p "/out$dir"; \
          cp -L "$lib" "/out$dir/$(basename "$lib")"; \
        done; \
    find /out -type f | sort

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/entrypoint"]
