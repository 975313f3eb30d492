# One image with the three binaries (trellis-control, trellis-proxy, trellis):
#   docker build -t ghcr.io/trellis-mesh/trellis:0.1.0 .
# k8s/install runs trellis-control from it; the injector runs trellis-proxy (init and sidecar).

FROM rust:1.89-bookworm AS build
WORKDIR /src
# aws-lc-rs builds its C and assembly with cmake and clang.
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trellis-control -p trellis-proxy -p trellis-cli \
 && mkdir -p /out \
 && cp target/release/trellis-control target/release/trellis-proxy target/release/trellis /out/

# `trellis-proxy init` needs iptables in the image; everything else is the static-ish binaries.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# Not root by default; the injector sets the proxy's UID (1337) and runs only the init step
# as root, with NET_ADMIN and NET_RAW.
USER 65532:65532
ENTRYPOINT ["trellis-control"]
