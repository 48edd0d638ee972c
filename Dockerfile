# syntax=docker/dockerfile:1
#
# chaos as a pod sidecar: `chaos serve` in a slim image. docs/sidecar.md explains the pod it is
# meant for (privileged, shareProcessNamespace) and what its faults can reach.
#
#   docker build -t chaos:dev .
#   docker run --rm --privileged --pid=container:APP --network=container:APP \
#       -v chaos-api:/run/chaos-api chaos:dev
#
# Builder: the project's own setup (`cargo xtask setup`, xtask/src/setup.rs) installs Debian's
# LLVM 22 / clang-22, the pinned nightly (chaos-ebpf/rust-toolchain.toml) with rust-src and bpf-linker built against LLVM 22, as it
# does on a developer's machine; the image repeats none of that logic. It also installs the test
# tools (QEMU, chromium, fio): they stay in this stage and never reach the runtime image.
FROM debian:12 AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential git \
 && rm -rf /var/lib/apt/lists/*
# rustup with the stable toolchain the workspace builds with; setup adds nightly + rust-src.
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the cache before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo xtask setup \
 && cargo build --release --locked --package chaos-user --bin chaos \
 && install -D -m 0755 target/release/chaos /out/chaos

# Runtime: the binary (it carries its eBPF object), the libraries it links beyond libc (libelf
# and zlib, for libbpf: see `ldd chaos`), and iproute2: `ip`, which every network fault runs,
# and the `tc` of the qdisc fallbacks (netem, ifb) and of the sweep.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 libelf1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/chaos /usr/local/bin/chaos
# The API socket goes in a directory the pod shares with its other containers (an emptyDir).
VOLUME ["/run/chaos-api"]
ENTRYPOINT ["/usr/local/bin/chaos", "serve"]
CMD ["--socket", "/run/chaos-api/chaos.sock"]
