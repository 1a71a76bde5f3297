# Multi-stage build: a Rust builder with cmake (needed by pingora's zlib-ng), then a slim
# runtime that runs authgate as an unprivileged user.
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin authgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system authgate \
 && useradd --system --gid authgate --home-dir /nonexistent --shell /usr/sbin/nologin authgate
COPY --from=builder /src/target/release/authgate /usr/local/bin/authgate
COPY config/authgate.toml /etc/authgate/authgate.toml
USER authgate:authgate
ENV AUTHGATE_CONFIG=/etc/authgate/authgate.toml
# Mount your own config over /etc/authgate/authgate.toml; it must listen on 0.0.0.0 to be
# reachable from outside the container. The admin listener stays on loopback for the check.
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["authgate"]
CMD ["run"]
