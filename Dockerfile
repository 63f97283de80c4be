# syntax=docker/dockerfile:1
# Three steps: dependencies (cached until Cargo.toml or Cargo.lock change), the crate, and
# a slim runtime image where the service runs as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Build every dependency against placeholder sources, in a layer of its own: a change to
# src/ then rebuilds only this crate (minutes, not the ~10 a cold build takes).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    mkdir -p src/bin/bench \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/bench/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin sandbox-broker \
    && rm -rf src
COPY src ./src
# The placeholder crate's outputs are older than the real sources, so cargo rebuilds it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin sandbox-broker

FROM debian:bookworm-slim AS runtime
# ca-certificates for the provider and AWS over TLS; curl for the health check only.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sandbox-broker broker \
    && mkdir -p /var/lib/sandbox-broker && chown broker /var/lib/sandbox-broker
COPY --from=build /src/target/release/sandbox-broker /usr/local/bin/sandbox-broker
USER 10001
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
