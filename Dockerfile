# dx-admission: a static binary and the bundled schemas in an empty image, run as non-root.
# Build: docker build -t hcl/dx-admission:0.1.0 .

FROM rust:1.95-bookworm AS build
# musl gives a static binary that needs nothing from the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY benches benches
COPY tests tests
COPY schemas schemas
# The project's own release build, for the static target.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin dx-admission

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/dx-admission /usr/bin/dx-admission
COPY --from=build /src/schemas /usr/share/dx-admission/schemas
# The chart's securityContext runs it as this user too (runAsNonRoot, read-only root filesystem).
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/bin/dx-admission"]
CMD ["serve", "--schemas=/usr/share/dx-admission/schemas"]
