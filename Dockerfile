# syntax=docker/dockerfile:1
#
# Vellum's container image: a multi-stage build, a non-root user, the data folder a volume.
#
#   docker build -t vellum .
#   docker run -p 8181:8181 -v vellum-data:/data \
#       -e MASTERKEY="$(openssl rand -base64 32)" -e JWT_PUB="$(base64 -w0 jwt.pub.pem)" vellum
#
# Without MASTERKEY and JWT_PUB the server generates development keys in /data and says so
# loudly: fine for a try, never for real data. Keep MASTERKEY: it is the only way to read
# the stored contents. For USER_DN behind a proxy, mount a users file and set USERS_FILE and
# TRUSTED_PROXIES (examples/nginx-mtls/). Every setting is in README.md, "Configuration".
#
# No Docker engine runs on the project's machines, so this file holds no step that CI does
# not also take (.ci/run, "Dockerfile"): the build context is the allowlist in .dockerignore,
# and the build is the single command `cargo build --release --locked --bin vellum`. CI lints
# this file with dockerfilelint, and compiles the allowlisted context alone with the same
# command in the debug profile (`cargo check --locked --bin vellum`): a file the build needs
# but the context lacks fails CI, not the first docker build. The release profile differs
# only in optimisation; building it in CI would add ~10 minutes on the 2-core machine.
# tests/it/cli.rs runs the runtime stage's settings outside a container: ENTRYPOINT and CMD with
# this ENV serve, and the HEALTHCHECK command passes while the server is up and fails after.

# rustc 1.95, the toolchain CI uses. Bookworm, as in the runtime stage, so that the binary
# and the runtime share one glibc.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The image's binary carries no debug info (the release profile keeps line tables).
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked --bin vellum

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="vellum" \
      org.opencontainers.image.description="A policy-enforcing, append-only, gm-data-compatible object store" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: TLS to S3. curl: the HEALTHCHECK only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vellum \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin vellum \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data
COPY --from=build /src/target/release/vellum /usr/local/bin/vellum
USER 10001:10001
WORKDIR /data
ENV LISTEN=0.0.0.0:8181 \
    DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8181
# /healthz answers 200 once the metadata store reads; the port follows LISTEN. The server
# is up well within the first interval, so no --start-period (which dockerfilelint 1.8
# cannot parse).
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["vellum"]
CMD ["serve"]
