# syntax=docker/dockerfile:1
# mcbridge: a static binary built in a Go image, run as a non-root user in a
# small Alpine image (Alpine for its wget, which the HEALTHCHECK uses).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same package that `go run ./cmd/mcbridge` runs, linked statically.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X github.com/mcbridge/mcbridge/bridge.Version=${VERSION}" \
      -o /out/mcbridge ./cmd/mcbridge

FROM alpine:3.22
RUN addgroup -S -g 10001 mcbridge && adduser -S -D -H -u 10001 -G mcbridge mcbridge
COPY --from=build /out/mcbridge /usr/local/bin/mcbridge
USER 10001:10001
# 11211: memcache protocol; 9150: /metrics, /healthz, /readyz. The config
# must listen on 0.0.0.0 inside a container (see deploy/mcbridge.yml).
EXPOSE 11211 9150
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:9150/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/mcbridge"]
CMD ["-config", "/etc/mcbridge/mcbridge.yml"]
