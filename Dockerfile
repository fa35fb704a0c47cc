# floe's container image: built in a Rust image, run from a slim Debian with a non-root user.
# Build: docker build -t floe .   Run: docker run -p 8181:8181 -v ./floe.toml:/etc/floe/floe.toml floe

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin floe \
    && strip target/release/floe

FROM debian:bookworm-slim
# curl for health checks; CA certificates for S3 over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/floe --create-home floe
COPY --from=build /src/target/release/floe /usr/local/bin/floe
USER floe
WORKDIR /var/lib/floe
EXPOSE 8181
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD curl -fsS http://127.0.0.1:8181/v1/config || exit 1
ENTRYPOINT ["floe"]
CMD ["--config", "/etc/floe/floe.toml", "serve"]
