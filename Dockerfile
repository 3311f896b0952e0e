# syntax=docker/dockerfile:1
# Build: docker build -t vellum .
# Run:   docker run -p 8181:8181 -v vellum-data:/data vellum
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schema ./schema
COPY policies ./policies
COPY benches ./benches
RUN cargo build --release --locked --bin vellum

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin vellum \
    && mkdir -p /data \
    && chown vellum /data
COPY --from=build /src/target/release/vellum /usr/local/bin/vellum
USER vellum
WORKDIR /data
ENV LISTEN=0.0.0.0:8181 DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8181
ENTRYPOINT ["/usr/local/bin/vellum"]
CMD ["serve"]
