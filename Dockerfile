# For users with Docker. The image tested here is built by `make image` (scripts/image.sh, no
# Docker engine needed) and run on a real node by tests/e2e_node.rs; this Dockerfile builds the
# same binary the same way and lays it out the same: a static audit-guard (glibc, crt-static;
# rustls, no OpenSSL) FROM scratch, /etc/passwd and /etc/group for uid 65532 (image/rootfs),
# Debian's CA bundle, user 65532:65532. It is not run here (no Docker engine on the build machine).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY harness ./harness
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin audit-guard \
 && cp target/x86_64-unknown-linux-gnu/release/audit-guard /audit-guard

FROM scratch
COPY image/rootfs/etc/passwd image/rootfs/etc/group /etc/
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /audit-guard /usr/local/bin/audit-guard
USER 65532:65532
EXPOSE 9443 8080 8081 8085
WORKDIR /
ENTRYPOINT ["/usr/local/bin/audit-guard"]
CMD ["serve"]
