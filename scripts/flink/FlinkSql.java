// Runs a SQL job file on Apache Flink in this JVM (a local MiniCluster), the way `ferry sql run`
// runs it: for comparisons of results and speed, and to check that Ferry's dialect is Flink's.
//
//   java -cp '.flink/lib/*:CLASSES' FlinkSql run FILE [PARALLELISM]   every INSERT as one job, until bounded sources end
//   java -cp '.flink/lib/*:CLASSES' FlinkSql explain FILE             plans every INSERT; prints "explained N"
//   java -cp '.flink/lib/*:CLASSES' FlinkSql explain-each             reads file paths on stdin, one a line, and
//                                                                     plans each as `explain` does, answering one
//                                                                     line each: "explained N" or "refused MESSAGE"
//                                                                     (one JVM for a whole test binary's files)
//
// Statements are separated by ';' at the end of a line. CREATE TABLE / CREATE TEMPORARY VIEW and
// SET run as they are; INSERTs (also inside EXECUTE STATEMENT SET) go into one statement set.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.StatementSet;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;

public class FlinkSql {
    static List<String> statements(String text) {
        List<String> out = new ArrayList<>();
        StringBuilder current = new StringBuilder();
        for (String line : text.split("\n")) {
            String trimmed = line.trim();
            if (trimmed.startsWith("--")) {
                continue;
            }
            current.append(line).append('\n');
            boolean inSet = current.toString().trim().toUpperCase().startsWith("EXECUTE STATEMENT SET");
            if (trimmed.endsWith(";") && (!inSet || trimmed.equalsIgnoreCase("END;"))) {
                String s = current.toString().trim();
                out.add(s.substring(0, s.length() - 1).trim());
                current.setLength(0);
            }
        }
        if (!current.toString().isBlank()) {
            out.add(current.toString().trim());
        }
        return out;
    }

    static String unquote(String s) {
        s = s.trim();
        return s.startsWith("'") && s.endsWith("'") ? s.substring(1, s.length() - 1) : s;
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        if (mode.equals("explain-each")) {
            java.io.BufferedReader in = new java.io.BufferedReader(new java.io.InputStreamReader(System.in, java.nio.charset.StandardCharsets.UTF_8));
            for (String path; (path = in.readLine()) != null; ) {
                String answer;
                try {
                    answer = "explained " + prepare(Files.readString(Path.of(path)), "1").explain();
                } catch (Exception e) {
                    StringBuilder causes = new StringBuilder();
                    for (Throwable t = e; t != null; t = t.getCause()) {
                        causes.append(causes.length() == 0 ? "" : " | caused by: ").append(t);
                    }
                    answer = "refused " + causes.toString().replace('\n', ' ').replace('\r', ' ');
                }
                System.out.println(answer);
                System.out.flush();
            }
            return;
        }
        Job job = prepare(Files.readString(Path.of(args[1])), args.length > 2 ? args[2] : "1");
        if (mode.equals("explain")) {
            System.out.println("explained " + job.explain());
            return;
        }
        long started = System.nanoTime();
        StatementSet set = job.env.createStatementSet();
        for (String insert : job.inserts) {
            set.addInsertSql(insert);
        }
        TableResult result = set.execute();
        result.await();
        System.out.println("flink finished in " + (System.nanoTime() - started) / 1_000_000 + " ms");
        System.exit(0);
    }

    /** A job file's tables and settings applied to a new environment, its INSERTs collected. */
    record Job(TableEnvironment env, List<String> inserts) {
        int explain() {
            for (String insert : inserts) {
                env.explainSql(insert);
            }
            return inserts.size();
        }
    }

    static Job prepare(String text, String parallelism) {
        Configuration conf = new Configuration();
        conf.setString("parallelism.default", parallelism);
        conf.setString("rest.bind-address", "127.0.0.1");
        conf.setString("rest.address", "127.0.0.1");
        conf.setString("taskmanager.numberOfTaskSlots", parallelism);
        TableEnvironment env = TableEnvironment.create(EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build());
        List<String> inserts = new ArrayList<>();
        for (String s : statements(text)) {
            String upper = s.toUpperCase();
            if (upper.startsWith("SET ")) {
                // SET 'key' = 'value' (the SQL client's statement; the Table API takes it as configuration).
                String[] kv = s.substring(4).split("=", 2);
                env.getConfig().getConfiguration().setString(unquote(kv[0]), unquote(kv[1]));
            } else if (upper.startsWith("EXECUTE STATEMENT SET")) {
                String body = s.substring(upper.indexOf("BEGIN") + 5, upper.lastIndexOf("END")).trim();
                for (String insert : statements(body)) {
                    inserts.add(insert);
                }
            } else if (upper.startsWith("INSERT")) {
                inserts.add(s);
            } else if (upper.startsWith("CREATE MATERIALIZED VIEW")) {
                // Ferry's (SQL Stream Builder's) statement, not Flink's: on Flink a view's query
                // is written to an upsert-kafka table.
                continue;
            } else {
                env.executeSql(s);
            }
        }
        return new Job(env, inserts);
    }
}
