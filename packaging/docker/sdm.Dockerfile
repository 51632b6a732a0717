# The sdm client agent as a sidecar: `sdm listen` logs in with the service token in
# SDM_SERVICE_TOKEN, opens the tunnels auto-connect gives it (every granted resource with a
# port), and the job's container in the same pod or network namespace connects to
# 127.0.0.1:PORT. Build from the repository's root:
#
#   docker build -f packaging/docker/sdm.Dockerfile -t sdm .
#
# Runs as uid 65532 on distroless; a tunnel answers only its own uid, so run the job's
# container as 65532 too (or pass --allow-other-users, which in a pod means its containers).
# Healthy once logged in and its control plane answers (`sdm probe` on the diagnostics
# listener). Tested without a container engine by sdm-cli/tests/e2e/container_image.rs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p sdm-cli --bin sdm \
 && install -D -m 0755 target/release/sdm /out/usr/local/bin/sdm \
 && install -d -m 0700 /out/home/nonroot/.sdm

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/sdm /usr/local/bin/sdm
COPY --from=build --chown=65532:65532 /out/home/nonroot/.sdm /home/nonroot/.sdm
USER 65532:65532
# The agent's socket and log; mount an emptyDir here under a read-only root filesystem.
ENV SDM_HOME=/home/nonroot/.sdm \
    SDM_DIAG_LISTEN=127.0.0.1:9091 \
    SDM_LOG_FORMAT=json
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/sdm", "probe", "127.0.0.1:9091"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sdm"]
CMD ["listen"]
