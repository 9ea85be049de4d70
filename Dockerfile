# Untested here: no Docker engine on the build machine (see README).
# Multi-stage: a static musl binary on distroless/static, running as non-root.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY harness ./harness
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin audit-guard \
 && cp target/x86_64-unknown-linux-musl/release/audit-guard /audit-guard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /audit-guard /usr/local/bin/audit-guard
USER 65532:65532
EXPOSE 9443 8080 8081 8085
ENTRYPOINT ["/usr/local/bin/audit-guard"]
CMD ["serve"]
