# The official redis_exporter image is FROM scratch: nothing in it can run a healthcheck.
# Same binary, on busybox, so compose can probe it with wget.
FROM oliver006/redis_exporter:v1.62.0 AS exporter

FROM busybox:1.36.1
COPY --from=exporter /redis_exporter /usr/bin/redis_exporter
USER 65534:65534
EXPOSE 9121
ENTRYPOINT ["/usr/bin/redis_exporter"]
