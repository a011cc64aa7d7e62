// What MirrorMaker 2's own client code reads from a cluster Ferry replicates into: a small
// command-line front end to connect-mirror-client, compiled and run by tests/java_tools.rs.
//
//   translate <bootstrap> <source alias> <group>   RemoteClusterUtils.translateOffsets: topic,partition,offset lines
//   heartbeats <bootstrap> <source alias>          MirrorClient: upstream clusters, replication hops, remote topics

import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.mirror.MirrorClient;
import org.apache.kafka.connect.mirror.RemoteClusterUtils;

public class MirrorCompat {
    public static void main(String[] args) throws Exception {
        Map<String, Object> props = Map.of("bootstrap.servers", args[1]);
        switch (args[0]) {
            case "translate": {
                Map<TopicPartition, OffsetAndMetadata> offsets =
                    RemoteClusterUtils.translateOffsets(props, args[2], args[3], Duration.ofSeconds(20));
                Map<String, Long> sorted = new TreeMap<>();
                offsets.forEach((tp, o) -> sorted.put(tp.topic() + "," + tp.partition(), o.offset()));
                sorted.forEach((tp, o) -> System.out.println(tp + "," + o));
                break;
            }
            case "heartbeats": {
                try (MirrorClient client = new MirrorClient(props)) {
                    System.out.println("upstream=" + new java.util.TreeSet<>(client.upstreamClusters()));
                    System.out.println("hops=" + client.replicationHops(args[2]));
                    System.out.println("remote=" + new java.util.TreeSet<>(client.remoteTopics()));
                }
                break;
            }
            default:
                throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }
}
