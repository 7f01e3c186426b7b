# trousseau-proxy: one binary, two uses (the proxy, and `inject-webhook`).
#   docker build -t trousseau-proxy .
#   docker run --rm -p 4180:4180 -v "$PWD/config.yaml:/etc/trousseau-proxy/config.yaml:ro" \
#     trousseau-proxy run --config /etc/trousseau-proxy/config.yaml    # with listen: 0.0.0.0:4180
# The same image serves the Helm chart's standalone proxy, its injector and the injected sidecars.

# --- build --------------------------------------------------------------------------------------
# Debian 12 (bookworm), like the runtime image below, so the glibc the binary links is the one it
# runs with. The toolchain CI tests with (some locked dependencies need more than rust-version).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# xtask is a workspace member (the test command's set-up): cargo needs its manifest to load the
# workspace, though the image never builds it.
COPY xtask ./xtask
# Without the `dev` feature: no embedded IdP that lets anyone sign in, in the binary that guards apps.
RUN cargo build --release --locked --no-default-features --bin trousseau-proxy \
 && cp target/release/trousseau-proxy /trousseau-proxy

# --- run ----------------------------------------------------------------------------------------
# distroless: glibc, CA certificates and tzdata, no shell, no package manager; `nonroot` is
# uid/gid 65532, the user the chart and the injector run the proxy as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /trousseau-proxy /trousseau-proxy
USER 65532:65532
# Where the proxy listens once told to (listen: 0.0.0.0:4180 or TROUSSEAU_PROXY_LISTEN).
EXPOSE 4180
ENTRYPOINT ["/trousseau-proxy"]
CMD ["run"]
