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
// As a real server does, a change stream's `getMore` that finds nothing new waits (up to its
// `maxTimeMS`, 1 s by default) for the next oplog write instead of answering an empty batch at
// once: the library's cursor rescans the whole oplog on every `getMore`, and a driver whose
// empty batches come back at once polls in a loop, which made the server slower the longer it
// ran. Each connection gets a worker thread of its own (up to WORKER_THREADS), so a waiting
// `getMore` holds up no other client.
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
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.aggregation.Aggregation;
import de.bwaldvogel.mongo.oplog.Oplog;
import io.netty.channel.Channel;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.h2.mvstore.MVStore;

public final class MongoLauncher extends MemoryBackend {
    static final MongoVersion MONGO_6_0 = new MongoVersion() {
        public List<Integer> getVersionArray() { return List.of(6, 0, 0); }
        public int getWireVersion() { return 17; }
    };

    static final String REPLICA_SET = "rs0";

    /** Netty worker threads: one per connection for up to this many connections. */
    static final int WORKER_THREADS = 128;

    /** Written on every oplog entry; a waiting change-stream `getMore` is woken by it. */
    static final OplogSignal SIGNAL = new OplogSignal();

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
        server.bind(new InetSocketAddress("127.0.0.1", port), 1, WORKER_THREADS);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("mongo-java-server listening on " + server.getConnectionString() + ", reporting MongoDB 6.0");
        Thread.currentThread().join(); // until killed
    }

    @Override
    public Document handleCommand(Channel channel, String database, String command, Document query) {
        if ("hello".equalsIgnoreCase(command) || "isMaster".equalsIgnoreCase(command)) return hello(channel, database, query);
        BsonTimestamp start = "aggregate".equals(command) && opensChangeStream(query) ? oplogEnd() : null;
        Document response = awaitingGetMore(getCursorRegistry(), database, command, query,
            () -> loggingWrittenInserts(command, query, () -> super.handleCommand(channel, database, command, query)));
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
        return new SignallingOplog(new NamespacedOplog(super.createOplog()));
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

    /**
     * Counters of oplog writes, in all and per namespace, that a change stream's `getMore` can
     * wait on: a stream of one collection is woken only by writes to it (the others, such as each
     * consumer's checkpoint update, would only make it scan the oplog again for nothing).
     */
    static final class OplogSignal {
        private final AtomicLong writes = new AtomicLong();
        private final java.util.concurrent.ConcurrentHashMap<String, AtomicLong> byNamespace =
            new java.util.concurrent.ConcurrentHashMap<>();

        private AtomicLong counter(String namespace) {
            return namespace == null ? writes : byNamespace.computeIfAbsent(namespace, n -> new AtomicLong());
        }

        /** Writes so far to `namespace` (`null`: to any). */
        long writes(String namespace) { return counter(namespace).get(); }

        void written(String namespace) {
            writes.incrementAndGet();
            if (namespace != null) counter(namespace).incrementAndGet();
            synchronized (this) { notifyAll(); }
        }

        /** Waits until a write to `namespace` (`null`: any) after `seen`, or until `deadline`. */
        synchronized void awaitWriteAfter(String namespace, long seen, Instant deadline) throws InterruptedException {
            AtomicLong counter = counter(namespace);
            while (counter.get() == seen) {
                long left = Duration.between(Instant.now(), deadline).toMillis();
                if (left <= 0) return;
                wait(left);
            }
        }
    }

    /**
     * The library's oplog, with what a server guarantees: an insert is logged only for the
     * documents that were written (the library logs every document of an `insert` command, even
     * one refused with a duplicate key, so a change stream delivered messages that no collection
     * held), and each entry is written through `write` (which signals [`SIGNAL`]; the durable
     * backend also commits).
     */
    abstract static class WrittenOplog implements Oplog {
        final Oplog inner;

        WrittenOplog(Oplog inner) { this.inner = inner; }

        /** Writes one oplog entry (or several, for a multi-document insert). */
        abstract void write(String ns, Runnable entry);

        public void handleInsert(String ns, List<Document> documents) {
            List<HeldInsert> held = HELD.get();
            if (held != null) held.add(new HeldInsert(this, ns, documents));
            else write(ns, () -> inner.handleInsert(ns, documents));
        }

        public void handleUpdate(String ns, Document selector, Document query, List<Object> ids) {
            write(ns, () -> inner.handleUpdate(ns, selector, query, ids));
        }

        public void handleDelete(String ns, Document query, List<Object> ids) { write(ns, () -> inner.handleDelete(ns, query, ids)); }

        public void handleDropCollection(String ns) { write(ns, () -> inner.handleDropCollection(ns)); }

        public Cursor createCursor(Document changeStream, String namespace, Aggregation stages) {
            return inner.createCursor(changeStream, namespace, stages);
        }
    }

    /** The memory backend's oplog: entries are signalled as they are written. */
    static final class SignallingOplog extends WrittenOplog {
        SignallingOplog(Oplog inner) { super(inner); }

        void write(String ns, Runnable entry) {
            entry.run();
            SIGNAL.written(ns);
        }
    }

    /** The inserts of the `insert` command running on this thread, held until its answer. */
    static final ThreadLocal<List<HeldInsert>> HELD = new ThreadLocal<>();

    record HeldInsert(WrittenOplog oplog, String ns, List<Document> documents) {}

    /**
     * Answers an `insert` command, then logs only the documents it wrote: none from the first
     * write error on for an ordered insert (the default), all but the failed ones otherwise.
     */
    static Document loggingWrittenInserts(String command, Document query, Answer answer) {
        if (!"insert".equalsIgnoreCase(command)) return answer.get();
        List<HeldInsert> held = new ArrayList<>();
        HELD.set(held);
        Document response;
        try {
            response = answer.get();
        } finally {
            HELD.remove();
        }
        java.util.Set<Integer> failed = new java.util.HashSet<>();
        if (response.get("writeErrors") instanceof List<?> errors) {
            for (Object error : errors) {
                if (error instanceof Document e && e.get("index") instanceof Number index) failed.add(index.intValue());
            }
        }
        boolean ordered = !Boolean.FALSE.equals(query.get("ordered"));
        int firstFailure = failed.stream().mapToInt(Integer::intValue).min().orElse(Integer.MAX_VALUE);
        for (HeldInsert insert : held) {
            List<Document> written = new ArrayList<>();
            for (int i = 0; i < insert.documents().size(); i++) {
                if (ordered ? i < firstFailure : !failed.contains(i)) written.add(insert.documents().get(i));
            }
            if (!written.isEmpty()) insert.oplog().write(insert.ns(), () -> insert.oplog().inner.handleInsert(insert.ns(), written));
        }
        return response;
    }

    /** A command as the library answers it. */
    interface Answer { Document get(); }

    /**
     * A change stream's `getMore` answered as a server does: when nothing new is in the oplog,
     * it waits for the next write (up to the command's `maxTimeMS`, 1 s by default) and reads
     * again, rather than answering an empty batch at once. Other commands are answered as is.
     */
    static Document awaitingGetMore(CursorRegistry cursors, String database, String command, Document query, Answer answer) {
        if (!"getMore".equalsIgnoreCase(command) || !(query.get("getMore") instanceof Number id)
            || !isChangeStream(cursors, id.longValue())) {
            return answer.get();
        }
        long waitMs = query.get("maxTimeMS") instanceof Number max && max.longValue() > 0 ? max.longValue() : 1000;
        Instant deadline = Instant.now().plusMillis(waitMs);
        // A stream of one collection names it; a database's or the cluster's names `$cmd.aggregate`.
        String namespace = query.get("collection") instanceof String collection && !collection.contains("$")
            ? database + "." + collection : null;
        while (true) {
            long seen = SIGNAL.writes(namespace);
            Document response = answer.get();
            if (!emptyBatch(response) || !Instant.now().isBefore(deadline)) return response;
            try {
                SIGNAL.awaitWriteAfter(namespace, seen, deadline);
            } catch (InterruptedException stopping) {
                Thread.currentThread().interrupt();
                return response;
            }
        }
    }

    private static boolean isChangeStream(CursorRegistry cursors, long id) {
        try {
            Cursor cursor = cursors.getCursor(id);
            return cursor instanceof CompletedCursor || cursor instanceof de.bwaldvogel.mongo.oplog.OplogCursor;
        } catch (RuntimeException closed) {
            return false;
        }
    }

    private static boolean emptyBatch(Document response) {
        return response.get("cursor") instanceof Document cursor && cursor.get("nextBatch") instanceof List<?> batch
            && batch.isEmpty() && cursor.get("id") instanceof Number id && id.longValue() != 0;
    }

    // The persistent backend: H2's MVStore in <file>, committed only as this class decides (the
    // store's background auto-commit is off: it would persist whatever happens to be written at
    // that moment). What a change stream reads, and what a client is told was written, is
    // committed, and a commit never splits a command from its oplog entry:
    // - every command runs under the shared side of a lock; a commit takes its exclusive side, so
    //   it persists only whole commands, each document with its oplog entry (a commit in between
    //   once persisted a message without its entry, which no change stream then delivered);
    // - a command's answer waits for a commit of what it wrote (concurrent commands share one);
    // - a change stream's read (its opening `aggregate` and each `getMore`) commits first and reads
    //   under the exclusive side too, so it never returns an entry a SIGKILL could still undo, as
    //   a real server's change streams return only majority-committed writes (without it the relay
    //   once published a message whose insert died with the server; the client's retry stored it
    //   again under a new id, and every device showed it twice).
    // Old chunks are not retained past a commit (retention time 0: safe when only the process
    // dies, as in the soak, since what it wrote is in the kernel's page cache), so the file reuses
    // its free space instead of growing by a chunk per commit. The oplog is a collection of the
    // store like any other, reopened on restart, so a resume token taken before the restart still
    // resumes; like a real server's capped oplog it keeps a window (OPLOG_WINDOW) of the newest
    // entries. Same change-stream `operationTime` and `getMore` waiting as the memory backend.
    static final class Durable extends H2Backend {
        /** How much oplog history is kept; a consumer further behind than this would miss events. */
        static final Duration OPLOG_WINDOW = Duration.ofSeconds(Long.getLong("chatcore.oplogWindowSeconds", 300));
        /** How often the oplog is trimmed and the file compacted. */
        static final Duration TRIM_EVERY = Duration.ofSeconds(10);

        /** Shared by commands, exclusive for commits and change-stream reads. */
        private final ReentrantReadWriteLock commits = new ReentrantReadWriteLock(true);
        private volatile Instant nextTrim = Instant.now().plus(TRIM_EVERY);

        Durable(String file) { this(open(file), new FloorClock()); }

        private Durable(MVStore store, FloorClock clock) {
            super(store, clock);
            // The library numbers oplog entries (clock second, counter from 1 at each start): a
            // server restarted within the second of its newest entry would write entries that
            // sort before it, and a change stream resuming after that entry would skip them (it
            // did, in a test that kills the server under load). A real server continues after its
            // newest entry, so the clock starts in the second after it.
            clock.floor = Instant.ofEpochSecond(newestOplogSecond() + 1);
        }

        private long newestOplogSecond() {
            var oplog = resolveDatabase("local").resolveCollection("oplog.rs", false);
            if (oplog == null) return 0;
            return oplog.queryAllAsStream().map(entry -> entry.get("ts")).filter(BsonTimestamp.class::isInstance)
                .mapToLong(ts -> ((BsonTimestamp) ts).getValue() >>> 32).max().orElse(0);
        }

        /** The system clock, but never before `floor`. */
        static final class FloorClock extends java.time.Clock {
            volatile Instant floor = Instant.EPOCH;

            public java.time.ZoneId getZone() { return java.time.ZoneOffset.UTC; }

            public java.time.Clock withZone(java.time.ZoneId zone) { return this; }

            public Instant instant() {
                Instant now = Instant.now();
                return now.isBefore(floor) ? floor : now;
            }
        }

        private static MVStore open(String file) {
            MVStore store = new MVStore.Builder().fileName(file).autoCommitDisabled().open();
            store.setRetentionTime(0);
            return store;
        }

        @Override
        protected Oplog createOplog() {
            return new SignallingOplog(super.createOplog());
        }

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            boolean opening = "aggregate".equals(command) && opensChangeStream(query);
            if (opening || "getMore".equalsIgnoreCase(command)) {
                BsonTimestamp start = opening ? oplogEnd(this) : null;
                Document response = awaitingGetMore(getCursorRegistry(), database, command, query, () -> exclusively(() -> {
                    commitWritten();
                    return super.handleCommand(channel, database, command, query);
                }));
                if (start != null && !response.containsKey("operationTime")) response.put("operationTime", start);
                return response;
            }
            Document response = shared(() -> loggingWrittenInserts(command, query, () -> super.handleCommand(channel, database, command, query)));
            if (maintenanceDue()) {
                shared(this::trimOplog);
                exclusively(this::compact);
            }
            if (getMvStore().hasUnsavedChanges()) { // else what this command wrote is committed already
                exclusively(() -> {
                    commitWritten();
                    return null;
                });
            }
            return response;
        }

        private void commitWritten() {
            if (getMvStore().hasUnsavedChanges()) commit();
        }

        private Document shared(Answer answer) {
            commits.readLock().lock();
            try {
                return answer.get();
            } finally {
                commits.readLock().unlock();
            }
        }

        private Document exclusively(Answer answer) {
            commits.writeLock().lock();
            try {
                return answer.get();
            } finally {
                commits.writeLock().unlock();
            }
        }

        /** Whether TRIM_EVERY has passed since the last maintenance (then it is due, once). */
        private synchronized boolean maintenanceDue() {
            Instant now = Instant.now();
            if (now.isBefore(nextTrim)) return false;
            nextTrim = now.plus(TRIM_EVERY);
            return true;
        }

        /**
         * Rewrites the live pages of mostly dead chunks (each commit writes a chunk; the chunks
         * it supersedes stay partly live), so their space can be reused and the file stops
         * growing by the commits' garbage; then commits.
         */
        private Document compact() {
            getMvStore().compact(80, 16 << 20);
            commitWritten();
            return null;
        }

        /** Removes oplog entries older than OPLOG_WINDOW. */
        private Document trimOplog() {
            Instant now = Instant.now();
            BsonTimestamp cutoff = new BsonTimestamp(now.minus(OPLOG_WINDOW), 0);
            int trimmed = resolveDatabase("local").resolveCollection("oplog.rs", false)
                .deleteDocuments(new Document("ts", new Document("$lt", cutoff)), 0);
            if (trimmed > 0) System.out.println("oplog: trimmed " + trimmed + " entries older than " + OPLOG_WINDOW);
            return null;
        }

        private static BsonTimestamp oplogEnd(MongoBackend backend) { // as MongoLauncher.oplogEnd
            int newest = backend.resolveDatabase("local").resolveCollection("oplog.rs", false).queryAllAsStream()
                .map(entry -> entry.get("ts")).filter(BsonTimestamp.class::isInstance)
                .mapToInt(ts -> ((BsonTimestamp) ts).getInc()).max().orElse(0);
            return new BsonTimestamp(backend.getClock().instant(), newest + 1);
        }
    }
}
