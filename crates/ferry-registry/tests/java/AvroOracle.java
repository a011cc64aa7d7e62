import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;

import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;

/** Apache Avro's own verdict for every ordered pair of a corpus (one schema per line):
 *  "reader writer COMPATIBLE|INCOMPATIBLE", reader reading data written with writer. */
public class AvroOracle {
    public static void main(String[] args) throws Exception {
        List<String> lines = Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8);
        Schema[] schemas = new Schema[lines.size()];
        for (int i = 0; i < schemas.length; i++) {
            schemas[i] = new Schema.Parser().parse(lines.get(i));
        }
        StringBuilder out = new StringBuilder();
        for (int r = 0; r < schemas.length; r++) {
            for (int w = 0; w < schemas.length; w++) {
                SchemaCompatibility.SchemaCompatibilityType type =
                    SchemaCompatibility.checkReaderWriterCompatibility(schemas[r], schemas[w]).getType();
                out.append(r).append(' ').append(w).append(' ').append(type).append('\n');
            }
        }
        System.out.print(out);
    }
}
