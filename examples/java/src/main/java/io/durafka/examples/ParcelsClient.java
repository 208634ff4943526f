package io.durafka.examples;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.function.Predicate;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * A Java service using a durafka task hub through its topics only (docs/topics.md).
 *
 * <p>It starts a {@code deliver} orchestration of the parcels app (examples/parcels.py), raises
 * its {@code picked_up} event, waits for its final status on {@code H.status} and prints the
 * output; then it signals the {@code Shelf} entity {@code A1} and prints the state it reads from
 * {@code H.entities}. Every value is Avro single-object encoding, made and read by Avro's own
 * {@link BinaryMessageEncoder} and {@link BinaryMessageDecoder} with the self-contained schemas
 * of {@code schemas/standalone/}.
 *
 * <p>Usage: {@code java -jar parcels-client.jar [bootstrap] [task hub] [parcel id]}.
 */
public final class ParcelsClient {
  private static final Set<String> TERMINAL = Set.of("COMPLETED", "FAILED", "TERMINATED");
  private static final Duration TIMEOUT = Duration.ofSeconds(120);

  private final String orchestrations;
  private final String status;
  private final String entities;
  private final KafkaProducer<byte[], byte[]> producer;
  private final Properties consumerConfig;

  private final Schema messageSchema = schema("OrchestrationMessage");
  private final Schema eventSchema = messageSchema.getField("event").schema();
  private final BinaryMessageEncoder<GenericRecord> messages =
      new BinaryMessageEncoder<>(GenericData.get(), messageSchema);
  private final BinaryMessageDecoder<GenericRecord> statuses =
      new BinaryMessageDecoder<>(GenericData.get(), schema("InstanceStatus"));
  private final BinaryMessageDecoder<GenericRecord> entityStates =
      new BinaryMessageDecoder<>(GenericData.get(), schema("EntityState"));

  ParcelsClient(String bootstrap, String hub) {
    orchestrations = hub + ".orchestrations";
    status = hub + ".status";
    entities = hub + ".entities";
    Properties producerConfig = new Properties();
    producerConfig.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    producerConfig.put(ProducerConfig.ACKS_CONFIG, "all");
    producerConfig.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    producerConfig.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    producer = new KafkaProducer<>(producerConfig);
    consumerConfig = new Properties();
    consumerConfig.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    // Processors write statuses and entity states in transactions: never read aborted ones.
    consumerConfig.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    consumerConfig.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    consumerConfig.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
    consumerConfig.put(
        ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:9092";
    String hub = args.length > 1 ? args[1] : "parcels";
    String parcelId = args.length > 2 ? args[2] : "p-" + UUID.randomUUID();
    ParcelsClient client = new ParcelsClient(bootstrap, hub);
    try {
      client.deliver(parcelId);
      client.fillShelf("A1", 3);
    } finally {
      client.producer.close();
    }
  }

  /** Start a delivery, raise its event, wait for its final status and print the output. */
  void deliver(String parcelId) throws Exception {
    String instanceId = parcelId;
    // A new execution id per start: a start delivered twice (a retried send) runs once.
    String executionId = UUID.randomUUID().toString().replace("-", "");
    GenericRecord start =
        event("EXECUTION_STARTED")
            .set("name", "deliver")
            .set("payload", json("{\"parcel_id\": \"" + parcelId + "\", \"recipient\": \"Ada\"}"))
            .set("execution_id", executionId)
            .set(
                "id_reuse_policy",
                new GenericData.EnumSymbol(
                    eventSchema.getField("id_reuse_policy").schema(), "REJECT_DUPLICATE"))
            .build();
    RecordMetadata started = send(instanceId, start);
    System.out.printf(
        "started deliver %s (execution %s) on partition %d%n",
        instanceId, executionId, started.partition());

    // An event raised before the orchestration waits for it is kept until it does.
    GenericRecord pickedUp =
        event("EVENT_RAISED")
            .set("name", "picked_up")
            .set("payload", json("{\"courier\": \"Bo\"}"))
            .build();
    send(instanceId, pickedUp);
    System.out.println("raised picked_up");

    GenericRecord done = awaitStatus(instanceId, executionId);
    String runtimeStatus = done.get("runtime_status").toString();
    Object output = done.get("output");
    String outputText = output == null ? "null" : text((ByteBuffer) output);
    System.out.printf("%s %s%n", runtimeStatus, outputText);
    if (!"COMPLETED".equals(runtimeStatus)) {
      throw new IllegalStateException(
          "delivery " + instanceId + " ended " + runtimeStatus + ": " + done.get("failure"));
    }
  }

  /** Signal {@code put count} to shelf {@code key} and print the state it then has. */
  void fillShelf(String key, int count) throws Exception {
    String entityId = "@Shelf@" + key;
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerConfig)) {
      // Where H.entities ends before the signal: the entity's next record answers it.
      TopicPartition partition =
          new TopicPartition(entities, partitionOf(entityId, entities, consumer));
      consumer.assign(List.of(partition));
      long from = consumer.endOffsets(List.of(partition)).get(partition);
      consumer.seek(partition, from);

      GenericRecord put =
          event("ENTITY_OPERATION")
              .set("name", "put")
              .set("payload", json(Integer.toString(count)))
              .build();
      send(entityId, put);
      System.out.printf("signalled %s put %d%n", entityId, count);

      GenericRecord state = awaitRecord(consumer, entityId, entityStates, r -> true);
      Object bytes = state.get("state");
      String stateText = bytes == null ? "null" : text((ByteBuffer) bytes);
      System.out.printf("%s state %s%n", entityId, stateText);
    }
  }

  /** A HistoryEvent of {@code kind} with the time set; every other field has its default. */
  private GenericRecordBuilder event(String kind) {
    return new GenericRecordBuilder(eventSchema)
        .set("kind", new GenericData.EnumSymbol(eventSchema.getField("kind").schema(), kind))
        .set("timestamp", System.currentTimeMillis());
  }

  /**
   * One record to H.orchestrations, keyed by the instance id (UTF-8). Java's default partitioner
   * puts it where durafka expects it: murmur2 of the key.
   */
  private RecordMetadata send(String instanceId, GenericRecord event) throws Exception {
    GenericRecord message =
        new GenericRecordBuilder(messageSchema)
            .set("instance_id", instanceId)
            .set("event", event)
            .build();
    byte[] value = bytes(messages.encode(message));
    byte[] key = instanceId.getBytes(StandardCharsets.UTF_8);
    return producer.send(new ProducerRecord<>(orchestrations, key, value)).get();
  }

  /** The terminal status of this execution, read from the instance's partition of H.status. */
  private GenericRecord awaitStatus(String instanceId, String executionId) throws Exception {
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerConfig)) {
      // The status of an instance is on the partition number its id hashes to.
      TopicPartition partition =
          new TopicPartition(status, partitionOf(instanceId, status, consumer));
      consumer.assign(List.of(partition));
      consumer.seekToBeginning(List.of(partition));
      return awaitRecord(
          consumer,
          instanceId,
          statuses,
          s -> executionId.equals(String.valueOf(s.get("execution_id")))
              && TERMINAL.contains(s.get("runtime_status").toString()));
    }
  }

  /** The first record of {@code key} that {@code wanted} accepts (tombstones are skipped). */
  private static GenericRecord awaitRecord(
      KafkaConsumer<byte[], byte[]> consumer,
      String key,
      BinaryMessageDecoder<GenericRecord> decoder,
      Predicate<GenericRecord> wanted)
      throws IOException {
    byte[] keyBytes = key.getBytes(StandardCharsets.UTF_8);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (System.nanoTime() < deadline) {
      for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
        if (record.value() == null || !Arrays.equals(record.key(), keyBytes)) {
          continue;
        }
        GenericRecord value = decoder.decode(record.value());
        if (wanted.test(value)) {
          return value;
        }
      }
    }
    throw new IllegalStateException("no record for " + key + " within " + TIMEOUT);
  }

  /** Kafka's default partition of a key: what durafka computes (Java's murmur2). */
  private static int partitionOf(String key, String topic, KafkaConsumer<byte[], byte[]> consumer) {
    int partitions = consumer.partitionsFor(topic).size();
    byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
    return Utils.toPositive(Utils.murmur2(bytes)) % partitions;
  }

  private static Schema schema(String record) {
    String path = "/durafka/schemas/" + record + ".avsc";
    try (InputStream in = ParcelsClient.class.getResourceAsStream(path)) {
      if (in == null) {
        throw new IllegalStateException(path + " is not on the classpath");
      }
      // One parser per file: each standalone schema defines its named types itself.
      return new Schema.Parser().parse(in);
    } catch (IOException e) {
      throw new IllegalStateException("cannot read " + path, e);
    }
  }

  private static ByteBuffer json(String text) {
    return ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
  }

  private static String text(ByteBuffer buffer) {
    return StandardCharsets.UTF_8.decode(buffer.duplicate()).toString();
  }

  private static byte[] bytes(ByteBuffer buffer) {
    byte[] out = new byte[buffer.remaining()];
    buffer.duplicate().get(out);
    return out;
  }
}
