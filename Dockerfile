# Two stages: build with the Rust toolchain, run on a slim image as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin sandbox-broker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sandbox-broker broker \
    && mkdir -p /var/lib/sandbox-broker && chown broker /var/lib/sandbox-broker
COPY --from=build /src/target/release/sandbox-broker /usr/local/bin/sandbox-broker
USER broker
ENV BROKER_LISTEN_ADDR=0.0.0.0:8080 \
    BROKER_DATA_DIR=/var/lib/sandbox-broker \
    LOG_FORMAT=json
VOLUME /var/lib/sandbox-broker
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM drains in-flight requests and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sandbox-broker"]
CMD ["serve"]
