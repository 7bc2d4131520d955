// A MongoDB wire-protocol server for the tests: mongo-java-server's in-memory backend with the
// oplog enabled (so change streams work), bound to 127.0.0.1:<port>, running until killed.
// Compiled and started by scripts/services.sh; usage: java -cp <jars>:<classes> MongoLauncher <port>
//
// Two adjustments so that today's drivers accept it:
// - The newest version the library offers, ServerVersion.MONGO_5_0, reports wire version 8
//   (MongoDB 4.2), below the minimum of the Rust driver 3.x and PyMongo 4.14+ (wire 9, MongoDB 4.4),
//   which then refuse to connect. The library uses the version only in its `isMaster` and
//   `buildInfo` answers, so this reports MongoDB 6.0 (wire 17) instead.
// - A change stream's opening `aggregate` answer lacks the `operationTime` a replica set sends
//   (drivers resume from it when the stream fails before its first event; PyMongo refuses to open
//   the stream without it), so it is added: the oplog position the stream starts from (the
//   position after the newest oplog entry, taken before the stream opens, so an event written
//   meanwhile is delivered again on such a resume rather than lost).
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import io.netty.channel.Channel;
import java.util.List;

public final class MongoLauncher extends MemoryBackend {
    static final MongoVersion MONGO_6_0 = new MongoVersion() {
        public List<Integer> getVersionArray() { return List.of(6, 0, 0); }
        public int getWireVersion() { return 17; }
    };

    public static void main(String[] args) throws InterruptedException {
        int port = Integer.parseInt(args.length > 0 ? args[0] : System.getenv().getOrDefault("CHATCORE_MONGO_PORT", "27117"));
        MongoServer server = new MongoServer(new MongoLauncher().version(MONGO_6_0));
        server.enableOplog(); // off by default; without it `watch()` is refused
        server.bind("127.0.0.1", port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("mongo-java-server listening on " + server.getConnectionString() + ", reporting MongoDB 6.0");
        Thread.currentThread().join(); // until killed
    }

    @Override
    public Document handleCommand(Channel channel, String database, String command, Document query) {
        BsonTimestamp start = "aggregate".equals(command) && opensChangeStream(query) ? oplogEnd() : null;
        Document response = super.handleCommand(channel, database, command, query);
        if (start != null && !response.containsKey("operationTime")) response.put("operationTime", start);
        return response;
    }

    private static boolean opensChangeStream(Document query) {
        return query.get("pipeline") instanceof List<?> stages && !stages.isEmpty()
            && stages.get(0) instanceof Document first && first.containsKey("$changeStream");
    }

    private BsonTimestamp oplogEnd() { // increments are global, so (now, newest + 1) follows every entry
        int newest = resolveDatabase("local").resolveCollection("oplog.rs", false).queryAllAsStream()
            .map(entry -> entry.get("ts")).filter(BsonTimestamp.class::isInstance)
            .mapToInt(ts -> ((BsonTimestamp) ts).getInc()).max().orElse(0);
        return new BsonTimestamp(getClock().instant(), newest + 1);
    }
}
