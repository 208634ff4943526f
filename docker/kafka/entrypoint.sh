#!/bin/sh
# KAFKA_* variables -> server.properties (as the official apache/kafka image:
# KAFKA_ADVERTISED_LISTENERS=... becomes advertised.listeners=...; a double
# underscore stands for a dash, a triple one for an underscore), then format the
# KRaft storage once and run the broker in the foreground (it gets SIGTERM).
set -euf  # no globbing: the classpath below is libs/*, for java to expand
# The topic data: KAFKA_LOG_DIRS (its first directory) or /var/lib/kafka/data, a volume.
KAFKA_LOG_DIRS=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}
export KAFKA_LOG_DIRS
logs=${KAFKA_LOG_DIRS%%,*}
props=/tmp/server.properties
mkdir -p "$logs"
{
  env | grep '^KAFKA_' | grep -v -e '^KAFKA_CLUSTER_ID=' -e '^KAFKA_HEAP_OPTS=' \
    | while IFS='=' read -r name value; do
        key=$(printf '%s' "${name#KAFKA_}" | sed -e 's/___/@U@/g' -e 's/__/-/g' -e 's/_/./g' -e 's/@U@/_/g' \
              | tr '[:upper:]' '[:lower:]')
        printf '%s=%s\n' "$key" "$value"
      done
} > "$props"
java_cmd="java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp /opt/kafka/libs/*"
if [ ! -f "$logs/meta.properties" ]; then
  # A cluster id as `kafka-storage random-uuid` makes one: 16 random bytes, base64url.
  cluster=${KAFKA_CLUSTER_ID:-A$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c 2-22)}
  # shellcheck disable=SC2086
  $java_cmd kafka.tools.StorageTool format --cluster-id "$cluster" --config "$props"
fi
# shellcheck disable=SC2086
exec $java_cmd kafka.Kafka "$props"
