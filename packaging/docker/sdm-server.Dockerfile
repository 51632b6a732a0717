# sdm-server in a container: the control plane and its gateway (`serve`, the default), or a
# standalone gateway (`gateway --control-plane …`). Build from the repository's root:
#
#   docker build -f packaging/docker/sdm-server.Dockerfile -t sdm-server .
#
# The image holds the one binary on distroless (glibc and CA certificates, no shell), runs as
# uid 65532, keeps its state in the volume /var/lib/sdm, and checks its own health through the
# diagnostics listener (`sdm-server probe`). Every setting is an SDM_* variable (the flag's
# name in capitals); docs/OPERATIONS.md ("Containers") has the Compose and Kubernetes shapes.
# Tested without a container engine by sdm-server/tests/container_image.rs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The image carries what runs: no debug info, symbols stripped.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p sdm-server --bin sdm-server \
 && install -D -m 0755 target/release/sdm-server /out/usr/local/bin/sdm-server \
 && install -d -m 0700 /out/var/lib/sdm

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/sdm-server /usr/local/bin/sdm-server
COPY --from=build --chown=65532:65532 /out/var/lib/sdm /var/lib/sdm
USER 65532:65532
VOLUME /var/lib/sdm
# Listen on every interface of the container; set SDM_PUBLIC_URL and SDM_GATEWAY_PUBLIC_ADDR to
# the addresses clients reach. The first admin token goes to the volume only, never to the log.
ENV SDM_DATA_DIR=/var/lib/sdm \
    SDM_LISTEN=0.0.0.0:8443 \
    SDM_GATEWAY_LISTEN=0.0.0.0:8444 \
    SDM_ADMIN_TOKEN_FILE=/var/lib/sdm/first-admin-token \
    SDM_ADMIN_TOKEN_FILE_ONLY=true \
    SDM_DIAG_LISTEN=127.0.0.1:9090 \
    SDM_LOG_FORMAT=json
EXPOSE 8443 8444
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/sdm-server", "probe", "127.0.0.1:9090"]
# SIGTERM drains open connections (--drain-timeout, 10 s): give `docker stop` longer than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sdm-server"]
CMD ["serve"]
