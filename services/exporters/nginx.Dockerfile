# The official nginx exporter image is FROM scratch: nothing in it can run a healthcheck.
# Same binary, on busybox, so compose can probe it with wget.
FROM nginx/nginx-prometheus-exporter:1.3.0 AS exporter

FROM busybox:1.36.1
COPY --from=exporter /usr/bin/nginx-prometheus-exporter /usr/bin/nginx-prometheus-exporter
USER 65534:65534
EXPOSE 9113
ENTRYPOINT ["/usr/bin/nginx-prometheus-exporter"]
