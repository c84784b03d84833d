# syntax=docker/dockerfile:1
# SocketChat node image. Build: docker build -t socketchat .
# Run alone (embedded SQLite in the /data volume):
#   docker run -p 8080:8080 -p 4433:4433/udp -v socketchat-data:/data socketchat
# A cluster (PostgreSQL, Redis, two nodes, HAProxy): docker-compose.yml.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (bench/ is a member; web/, migrations/ and protocol/ are compiled in).
# .dockerignore keeps target/, node_modules/, data/ and .git/ out.
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin socketchat \
 && install -m 0755 target/release/socketchat /usr/local/bin/socketchat

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 socketchat \
 && useradd --system --uid 10001 --gid socketchat --home-dir /data --shell /usr/sbin/nologin socketchat \
 && install -d -o socketchat -g socketchat -m 0700 /data
COPY --from=builder /usr/local/bin/socketchat /usr/local/bin/socketchat

# Inside a container the listeners must not be loopback-only. The data dir holds the embedded
# database, a generated JWT secret and generated certificates; with DATABASE_URL only the latter.
ENV SOCKETCHAT_LISTEN=0.0.0.0:8080 \
    SOCKETCHAT_WT_LISTEN=0.0.0.0:4433 \
    SOCKETCHAT_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /data
USER socketchat:socketchat
EXPOSE 8080/tcp 4433/udp

# GET /readyz over bash's /dev/tcp (the slim image has no curl): healthy while the node is ready,
# unhealthy while its store or relay is down and while it drains.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SOCKETCHAT_LISTEN##*:} && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM (docker stop) makes the node answer 503 on /readyz and drain its connections for
# SOCKETCHAT_SHUTDOWN_GRACE seconds (default 10, below docker's default 10 s stop timeout:
# raise stop_grace_period with it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["socketchat"]
