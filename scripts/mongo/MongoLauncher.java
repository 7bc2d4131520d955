// A MongoDB wire-protocol server for the tests: mongo-java-server's in-memory backend with the
// oplog enabled (so change streams work), bound to 127.0.0.1:<port>, running until killed.
// Compiled and started by scripts/services.sh; usage: java -cp <jars>:<classes> MongoLauncher <port>
// [h2:<file>]. With `h2:<file>` (the soak, scripts/soak.sh) the data, oplog included, lives in an
// H2 MVStore file instead of memory and survives a restart, so change streams resume; see Durable.
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
//
// And so that the Debezium MongoDB connector (which accepts only a replica set) can stream from it:
// - `hello`/`isMaster` answer as the primary of a one-member replica set named `rs0` (`setName`,
//   `hosts`, `primary`, `me`, `isWritablePrimary`), with the oplog position as `operationTime`
//   (where the connector starts streaming when it takes no snapshot);
// - change events carry the `ns` ({db, coll}) a server sends, added before the stream's own
//   `$match` stages run (the connector filters on it), and an update's `documentKey` is its `_id`
//   (the library put the update operators there) with an `updateDescription` beside it.
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.backend.Cursor;
import de.bwaldvogel.mongo.backend.aggregation.Aggregation;
import de.bwaldvogel.mongo.oplog.Oplog;
import io.netty.channel.Channel;
import java.util.ArrayList;
import java.util.List;

public final class MongoLauncher extends MemoryBackend {
    static final MongoVersion MONGO_6_0 = new MongoVersion() {
        public List<Integer> getVersionArray() { return List.of(6, 0, 0); }
        public int getWireVersion() { return 17; }
    };

    static final String REPLICA_SET = "rs0";

    private final String me;

    MongoLauncher(int port) {
        this.me = "127.0.0.1:" + port;
    }

    public static void main(String[] args) throws InterruptedException {
        int port = Integer.parseInt(args.length > 0 ? args[0] : System.getenv().getOrDefault("CHATCORE_MONGO_PORT", "27117"));
        MongoServer server = new MongoServer(args.length > 1 && args[1].startsWith("h2:")
            ? new Durable(args[1].substring(3)).version(MONGO_6_0)
            : new MongoLauncher(port).version(MONGO_6_0));
        server.enableOplog(); // off by default; without it `watch()` is refused
        server.bind("127.0.0.1", port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("mongo-java-server listening on " + server.getConnectionString() + ", reporting MongoDB 6.0");
        Thread.currentThread().join(); // until killed
    }

    @Override
    public Document handleCommand(Channel channel, String database, String command, Document query) {
        if ("hello".equalsIgnoreCase(command) || "isMaster".equalsIgnoreCase(command)) return hello(channel, database, query);
        BsonTimestamp start = "aggregate".equals(command) && opensChangeStream(query) ? oplogEnd() : null;
        Document response = super.handleCommand(channel, database, command, query);
        if (start != null && !response.containsKey("operationTime")) response.put("operationTime", start);
        if (start != null || "getMore".equalsIgnoreCase(command)) addPostBatchResumeToken(response);
        return response;
    }

    private Document hello(Channel channel, String database, Document query) {
        Document response = super.handleCommand(channel, database, "ismaster", query);
        response.put("isWritablePrimary", Boolean.TRUE);
        response.put("helloOk", Boolean.TRUE);
        response.put("setName", REPLICA_SET);
        response.put("setVersion", 1);
        response.put("hosts", List.of(me));
        response.put("primary", me);
        response.put("me", me);
        response.put("secondary", Boolean.FALSE);
        response.put("operationTime", oplogEnd());
        return response;
    }

    @Override
    protected Oplog createOplog() {
        return new NamespacedOplog(super.createOplog());
    }

    /** The library's oplog, whose change streams run their stages on events completed as a server's. */
    private final class NamespacedOplog implements Oplog {
        private final Oplog inner;

        NamespacedOplog(Oplog inner) { this.inner = inner; }

        public void handleInsert(String ns, List<Document> documents) { inner.handleInsert(ns, documents); }

        public void handleUpdate(String ns, Document selector, Document query, List<Object> ids) {
            inner.handleUpdate(ns, selector, query, ids);
        }

        public void handleDelete(String ns, Document query, List<Object> ids) { inner.handleDelete(ns, query, ids); }

        public void handleDropCollection(String ns) { inner.handleDropCollection(ns); }

        public Cursor createCursor(Document changeStream, String namespace, Aggregation stages) {
            Aggregation none = Aggregation.fromPipeline(List.of(), null, null, null, null);
            Document opening = openingToken(changeStream);
            Cursor raw = inner.createCursor(changeStream, namespace, none);
            CompletedCursor completed = new CompletedCursor(raw, namespace, stages);
            completed.lastRead = opening;
            getCursorRegistry().remove(raw);
            getCursorRegistry().add(completed);
            return completed;
        }
    }

    /**
     * Completes each event as a server writes it (`ns`; for an update its `_id` as `documentKey`, the
     * looked-up document or null as `fullDocument`, and an `updateDescription`), then runs the
     * stream's stages, and remembers the newest event read for `postBatchResumeToken`.
     */
    private final class CompletedCursor implements Cursor {
        private final Cursor raw;
        private final Document ns;
        private final Aggregation stages;
        private volatile Document lastRead;

        CompletedCursor(Cursor raw, String namespace, Aggregation stages) {
            this.raw = raw;
            int dot = namespace.indexOf('.');
            this.ns = new Document("db", namespace.substring(0, dot)).append("coll", namespace.substring(dot + 1));
            this.stages = stages;
        }

        public long getId() { return raw.getId(); }

        public boolean isEmpty() { return raw.isEmpty(); }

        Document resumeToken() { return lastRead; }

        public List<Document> takeDocuments(int numberToReturn) {
            List<Document> events = new ArrayList<>();
            for (Document event : raw.takeDocuments(numberToReturn)) {
                events.add(complete(event));
                if (event.get("_id") instanceof Document token) lastRead = token;
            }
            return stages.runStages(events.stream());
        }

        private Document complete(Document event) {
            Object type = event.get("operationType");
            if (!"insert".equals(type) && !"update".equals(type) && !"delete".equals(type)) return event;
            Document out = new Document();
            for (String field : event.keySet()) {
                out.put(field, event.get(field));
                if ("operationType".equals(field)) out.put("ns", ns.clone());
            }
            if ("update".equals(type) && event.get("documentKey") instanceof Document operators) {
                out.put("documentKey", new Document("_id", updatedId(event.get("clusterTime"))));
                // Without the document (deleted since, or no updateLookup) the library sent the delta.
                if (!(event.get("fullDocument") instanceof Document full && full.containsKey("_id"))) {
                    out.put("fullDocument", null);
                }
                Object set = operators.get("$set");
                Object unset = operators.get("$unset");
                out.put("updateDescription", new Document("updatedFields", set instanceof Document d ? d : new Document())
                    .append("removedFields", unset instanceof Document u ? new ArrayList<>(u.keySet()) : List.of())
                    .append("truncatedArrays", List.of()));
            }
            return out;
        }
    }

    /**
     * The token a stream has before its first event: where it resumes from; just before its
     * `startAtOperationTime`; or for a stream from now, just before the oplog's end (an event written
     * while the stream opens comes after it).
     */
    private Document openingToken(Document changeStream) {
        for (String option : List.of("startAfter", "resumeAfter")) {
            if (changeStream.get(option) instanceof Document token) return token;
        }
        BsonTimestamp from = changeStream.get("startAtOperationTime") instanceof BsonTimestamp at ? at : oplogEnd();
        return new Document("_data", Long.toHexString(from.getValue() - 1));
    }

    /** The `_id` of the document an update oplog entry changed (its `o2`), found by the entry's `ts`. */
    private Object updatedId(Object ts) {
        return resolveDatabase("local").resolveCollection("oplog.rs", false).queryAllAsStream()
            .filter(entry -> ts != null && ts.equals(entry.get("ts")))
            .map(entry -> entry.get("o2")).filter(Document.class::isInstance)
            .map(o2 -> ((Document) o2).get("_id")).findFirst().orElse(null);
    }

    /** A change stream's batch carries the token to resume after everything read so far. */
    private void addPostBatchResumeToken(Document response) {
        if (!(response.get("cursor") instanceof Document cursor) || !(cursor.get("id") instanceof Number id)) return;
        Cursor open;
        try {
            open = getCursorRegistry().getCursor(id.longValue());
        } catch (RuntimeException closed) {
            return;
        }
        if (open instanceof CompletedCursor stream && stream.resumeToken() != null) {
            cursor.put("postBatchResumeToken", stream.resumeToken());
        }
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

    // The persistent backend: H2's MVStore in <file>. The store is committed before each command's
    // answer, so a write that was answered survives a SIGKILL (MVStore's own background commit
    // would lose the last second of them, which a journaled MongoDB write never does). The oplog
    // is a collection of the store like any other, reopened on restart, so a resume token taken
    // before the restart still resumes. Same change-stream `operationTime` as the memory backend.
    static final class Durable extends H2Backend {
        Durable(String file) { super(file); }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            BsonTimestamp start = "aggregate".equals(command) && opensChangeStream(query) ? oplogEnd(this) : null;
            try {
                Document response = super.handleCommand(channel, database, command, query);
                if (start != null && !response.containsKey("operationTime")) response.put("operationTime", start);
                return response;
            } finally {
                commit();
            }
        }

        private static BsonTimestamp oplogEnd(MongoBackend backend) { // as MongoLauncher.oplogEnd
            int newest = backend.resolveDatabase("local").resolveCollection("oplog.rs", false).queryAllAsStream()
                .map(entry -> entry.get("ts")).filter(BsonTimestamp.class::isInstance)
                .mapToInt(ts -> ((BsonTimestamp) ts).getInc()).max().orElse(0);
            return new BsonTimestamp(backend.getClock().instant(), newest + 1);
        }
    }
}
