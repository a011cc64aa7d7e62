// Prints the words Flink's SQL parser reserves, one a line, sorted: the words a job file must quote
// with backticks to use as names. Ferry keeps the same list (crates/ferry-sql/src/flink_reserved.txt)
// and its SQL tests compare the two.
//
//   java -cp 'flink-table-planner.jar:.flink/lib/*:CLASSES' FlinkReserved
//
// The parser is inside flink-table-planner-loader's nested flink-table-planner.jar.
import java.io.StringReader;
import java.util.TreeSet;

import org.apache.calcite.sql.parser.SqlAbstractParserImpl;
import org.apache.flink.sql.parser.impl.FlinkSqlParserImpl;

public class FlinkReserved {
    public static void main(String[] args) {
        SqlAbstractParserImpl.Metadata metadata = FlinkSqlParserImpl.FACTORY.getParser(new StringReader("")).getMetadata();
        TreeSet<String> reserved = new TreeSet<>();
        for (String token : metadata.getTokens()) {
            if (metadata.isReservedWord(token)) {
                reserved.add(token);
            }
        }
        reserved.forEach(System.out::println);
    }
}
