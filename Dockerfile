# dx-admission: the static binary and the bundled schemas in an empty image, run as non-root.
# Build it with `.ci/image` (the static musl release build, then `docker build`); CI builds,
# runs and tests exactly this image. No registry is needed: nothing is pulled.
FROM scratch
COPY target/x86_64-unknown-linux-musl/release/dx-admission /usr/bin/dx-admission
COPY schemas /usr/share/dx-admission/schemas
# Every subcommand finds the bundled schemas with no flag; --schemas still overrides.
ENV DX_ADMISSION_SCHEMAS=/usr/share/dx-admission/schemas
# The chart's securityContext runs it as this user too (runAsNonRoot, read-only root filesystem).
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/bin/dx-admission"]
CMD ["serve"]
