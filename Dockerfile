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
 && mkdir -p /out/bin /out/debug \
 && for b in trellis-control trellis-proxy trellis; do \
      cp "target/release/$b" "/out/bin/$b" \
      && objcopy --only-keep-debug "/out/bin/$b" "/out/debug/$b.debug" \
      && strip --strip-debug "/out/bin/$b" \
      && objcopy --add-gnu-debuglink="/out/debug/$b.debug" "/out/bin/$b"; \
    done

# The release profile keeps line tables (debug = 1) for perf and backtraces; the image ships
# binaries without them (trellis-proxy: 109 MB -> 24 MB). The symbol table stays (4 MB), so a
# panic's backtrace still names its functions. The debug info is linked by name. To get it:
#   docker build --target debug --output type=local,dest=./trellis-debug .
FROM scratch AS debug
COPY --from=build /out/debug/ /

# `trellis-proxy init` needs iptables in the image; everything else is the static-ish binaries.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/ /usr/local/bin/
# Not root by default; the injector sets the proxy's UID (1337) and runs only the init step
# as root, with NET_ADMIN and NET_RAW.
USER 65532:65532
ENTRYPOINT ["trellis-control"]
