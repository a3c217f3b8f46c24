# The official redis_exporter image is FROM scratch: nothing in it can run a healthcheck.
# Same binary, on busybox, so compose can probe it with wget, and a shell to read the
# Redis password from a file into the environment (never onto a command line).
FROM oliver006/redis_exporter:v1.62.0 AS exporter

FROM busybox:1.36.1
COPY --from=exporter /redis_exporter /usr/bin/redis_exporter
COPY services/exporters/redis-exporter-entrypoint.sh /usr/bin/redis-exporter-entrypoint
USER 65534:65534
EXPOSE 9121
ENTRYPOINT ["/usr/bin/redis-exporter-entrypoint"]
