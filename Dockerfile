# syntax=docker/dockerfile:1.7
# The kubedirector-rs operator image: `docker build -t kubedirector-rs:latest .`
# Layout as upstream's image (spec 5.7): the binary at /home/kubedirector/kubedirector, the
# configcli tarball at /home/kubedirector/configcli.tgz, running as UID 1001 (group 0).
# deploy/kubedirector/20-deployment.yaml runs it; tests/deploy_manifests.rs checks both agree.

# 1. Build the operator binary.
FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kubedirector \
 && install -D -m 0755 target/release/kubedirector /out/kubedirector

# 2. configcli (the helper upstream's app packages use inside members), version as upstream's Makefile.
FROM docker.io/library/debian:12-slim AS configcli
ARG CONFIGCLI_VERSION=0.8
ADD https://github.com/bluek8s/configcli/archive/v${CONFIGCLI_VERSION}.tar.gz /out/configcli.tgz

# 3. The runtime image.
FROM docker.io/library/debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /home/kubedirector \
 && chown 1001:0 /home/kubedirector \
 && chmod 0775 /home/kubedirector
COPY --from=build --chown=1001:0 --chmod=0755 /out/kubedirector /home/kubedirector/kubedirector
COPY --from=configcli --chown=1001:0 --chmod=0644 /out/configcli.tgz /home/kubedirector/configcli.tgz
USER 1001:0
WORKDIR /home/kubedirector
# metrics and health (/metrics, /healthz, /readyz), admission webhook (HTTPS)
EXPOSE 8383 8443
ENTRYPOINT ["/home/kubedirector/kubedirector"]
CMD ["run", "--log-format", "json"]
