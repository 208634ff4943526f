// Produces one record per key with the stock Java producer and its default
// partitioner (no partition given), and prints "<hex key> <partition>" as
// acknowledged by the broker. Run as a single-file source program:
//   java -cp '<kafka libs>/*' JavaKeyedProducer.java <bootstrap> <topic> <hex key>...
// Keys are hex so any bytes (and the empty key) survive the command line.

import java.util.HexFormat;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaKeyedProducer {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put("bootstrap.servers", args[0]);
        config.put("key.serializer", ByteArraySerializer.class.getName());
        config.put("value.serializer", ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config)) {
            for (int i = 2; i < args.length; i++) {
                byte[] key = HexFormat.of().parseHex(args[i]);
                RecordMetadata meta = producer.send(new ProducerRecord<>(args[1], key, key)).get();
                System.out.println("PARTITION " + args[i] + " " + meta.partition());
            }
        }
    }
}
