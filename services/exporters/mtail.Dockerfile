# mtail counts the gateway's answers from nginx's metrics log (infra/mtail/, mounted at
# /etc/mtail). The native stack runs Debian bookworm's mtail package; this image installs
# the same package, so compose and the tests run the same build of the same program.
# On the api image's base (shared layers); its python runs the healthcheck.
FROM python:3.11.10-slim-bookworm
# Pinned: bookworm's mtail, the version scripts/os-deps.sh installs for the native stack.
RUN apt-get update \
    && apt-get install -y --no-install-recommends mtail=3.0.0~rc50-1+b6 \
    && rm -rf /var/lib/apt/lists/*
USER 65534:65534
EXPOSE 3903 5140/udp
ENTRYPOINT ["/usr/bin/mtail"]
