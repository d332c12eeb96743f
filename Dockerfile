# One image with every agentfleet binary, built on the same Debian 12 packages as the scripts.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librdkafka-dev libprotobuf-c-dev protobuf-c-compiler \
      libhiredis-dev libcurl4-openssl-dev libevent-dev libjansson-dev libyaml-dev libssl-dev \
      libcmocka-dev libjemalloc-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build /build -j"$(nproc)"

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
      librdkafka1 libprotobuf-c1 libhiredis0.14 libcurl4 libevent-2.1-7 libevent-pthreads-2.1-7 \
      libjansson4 libyaml-0-2 libssl3 libjemalloc2 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/agentfleet /build/agentfleet-coordinator /build/agentfleet-worker \
     /build/agentfleet-simagent /build/af-kafka-admin /usr/local/bin/
# The container config points at the compose services; users mount their own over it.
COPY examples/claims/agentfleet.yaml /etc/agentfleet/agentfleet.yaml
USER nobody
