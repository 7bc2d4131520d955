"""What the test MongoDB (scripts/services.sh's mongo-java-server) does, checked with PyMongo.

    .cache/venv/bin/python scripts/mongo/check_change_streams.py [URI]

URI defaults to $CHATCORE_TEST_MONGO_URI. Works in a fresh database `cs_check_<random>` (dropped at
the end) and prints one line per feature: `ok`, or `NO` with what the server answered. Exits 1 if a
feature the chatcore-mongo backend relies on is missing (CRUD, a unique index, a change stream with
`fullDocument: 'updateLookup'`, event `_id` resume tokens, `resumeAfter`).
"""

import os
import sys
import threading
import time
import uuid

import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError

URI = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "CHATCORE_TEST_MONGO_URI", "mongodb://127.0.0.1:27117/?directConnection=true")
REQUIRED = set()
failures = []


def check(name, required=False):
    def run(fn):
        try:
            detail = fn()
            print(f"ok  {name}" + (f": {detail}" if detail else ""))
        except Exception as e:  # noqa: BLE001 - report whatever the server or driver says
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            print(f"NO  {name}: {msg}")
            if required:
                failures.append(name)
        return fn
    return run


def next_event(stream, timeout=5.0):
    """The next change event, or an AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            return event
    raise AssertionError(f"no change event within {timeout} s")


client = pymongo.MongoClient(URI, directConnection=True, serverSelectionTimeoutMS=3000)
hello = client.admin.command("isMaster")
build = client.admin.command("buildInfo")
print(f"server: {URI} version {build.get('version')} maxWireVersion {hello.get('maxWireVersion')} "
      f"setName {hello.get('setName')!r} logicalSessionTimeoutMinutes "
      f"{hello.get('logicalSessionTimeoutMinutes')!r}; pymongo {pymongo.version}")
db = client[f"cs_check_{uuid.uuid4().hex[:8]}"]
coll = db["chat"]


@check("insert_one + find_one", required=True)
def _():
    inserted = coll.insert_one({"stream_id": "s1", "content": "hello"}).inserted_id
    found = coll.find_one({"_id": inserted})
    assert found and found["content"] == "hello", found
    return f"_id {inserted}"


@check("find with filter, sort, limit; count_documents", required=True)
def _():
    coll.insert_many([{"stream_id": "s2", "n": i} for i in range(5)])
    got = [d["n"] for d in coll.find({"stream_id": "s2", "n": {"$gte": 1}}).sort("n", -1).limit(3)]
    assert got == [4, 3, 2], got
    assert coll.count_documents({"stream_id": "s2"}) == 5


@check("update_one($set, upsert=True) and replace_one(upsert=True)", required=True)
def _():
    ckpt = db["change_checkpoints"]
    for token in ("t1", "t2"):
        ckpt.update_one({"_id": "consumer"}, {"$set": {"token": token}}, upsert=True)
    assert ckpt.find_one({"_id": "consumer"})["token"] == "t2"
    users = db["user_email"]
    for email in ("a@x", "b@x"):
        users.replace_one({"user_id": "u1"}, {"user_id": "u1", "email": email}, upsert=True)
    assert [u["email"] for u in users.find({"user_id": "u1"})] == ["b@x"]


@check("createIndexes {stream_id: 1, _id: 1}", required=True)
def _():
    return coll.create_index([("stream_id", 1), ("_id", 1)])


@check("createIndexes unique + DuplicateKeyError (code 11000)", required=True)
def _():
    keys = db["chat_idempotency"]
    keys.create_index("key", unique=True)
    keys.insert_one({"key": "k1"})
    try:
        keys.insert_one({"key": "k1"})
    except DuplicateKeyError as e:
        return f"code {e.code}"
    raise AssertionError("second insert with the same unique key was accepted")


@check("watch(full_document='updateLookup'): insert from another thread arrives", required=True)
def _():
    events, ready = [], threading.Event()

    def watcher():
        with coll.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
            ready.set()
            events.append(next_event(stream))

    t = threading.Thread(target=watcher)
    t.start()
    ready.wait(5)

    def writer():
        coll.insert_one({"stream_id": "s3", "content": "from another thread"})

    w = threading.Thread(target=writer)
    w.start()
    w.join()
    t.join(10)
    assert events, "no event"
    e = events[0]
    assert e["operationType"] == "insert", e
    assert e["fullDocument"]["content"] == "from another thread", e
    assert "_data" in e["_id"], e["_id"]
    return f"_id {e['_id']}, ns {e.get('ns')}, documentKey {e.get('documentKey')}"


tokens = {}


def one_update_event(update, **watch):
    """The event of `update(_id)` on a fresh document, and that _id."""
    oid = coll.insert_one({"stream_id": "s4", "content": "v1", "n": 0}).inserted_id
    with coll.watch(max_await_time_ms=200, **watch) as stream:
        update(oid)
        return next_event(stream), oid


@check("update_one: event operationType 'update'")
def _():
    e, _ = one_update_event(lambda oid: coll.update_one({"_id": oid}, {"$set": {"content": "v2"}}))
    assert e["operationType"] == "update", e


@check("update_one: documentKey is {_id}")
def _():
    e, oid = one_update_event(lambda oid: coll.update_one({"_id": oid}, {"$set": {"content": "v2"}}))
    assert e.get("documentKey") == {"_id": oid}, f"documentKey {e.get('documentKey')}"


@check("update_one + updateLookup: fullDocument is the whole document after the update")
def _():
    e, oid = one_update_event(lambda oid: coll.update_one({"_id": oid}, {"$set": {"content": "v2"}}),
                              full_document="updateLookup")
    want = {"_id": oid, "stream_id": "s4", "content": "v2", "n": 0}
    assert e.get("fullDocument") == want, f"fullDocument {e.get('fullDocument')}"


@check("update_one without updateLookup: no fullDocument, an updateDescription")
def _():
    e, _ = one_update_event(lambda oid: coll.update_one({"_id": oid}, {"$set": {"content": "v2"}}))
    assert e.get("fullDocument") is None, f"fullDocument {e.get('fullDocument')}"
    assert e.get("updateDescription"), f"updateDescription {e.get('updateDescription')}"


@check("replace_one: event operationType 'replace' with the new document")
def _():
    e, _ = one_update_event(lambda oid: coll.replace_one({"_id": oid}, {"stream_id": "s4", "content": "r"}))
    assert e["operationType"] == "replace", f"operationType {e['operationType']!r}, event {e}"


@check("find_one_and_update: an event at all")
def _():
    e, _ = one_update_event(
        lambda oid: coll.find_one_and_update({"_id": oid}, {"$set": {"content": "v2"}}))
    return e["operationType"]


@check("update_one(upsert=True) inserting: 'insert' event")
def _():
    with coll.watch(max_await_time_ms=200) as stream:
        coll.update_one({"upsert_key": 1}, {"$set": {"v": 1}}, upsert=True)
        e = next_event(stream)
    assert e["operationType"] == "insert" and e["fullDocument"]["v"] == 1, e


@check("delete_one: 'delete' event with documentKey {_id}")
def _():
    oid = coll.insert_one({"stream_id": "s5"}).inserted_id
    with coll.watch(max_await_time_ms=200) as stream:
        coll.delete_one({"_id": oid})
        e = next_event(stream)
    assert e["operationType"] == "delete" and e["documentKey"] == {"_id": oid}, e


@check("event has ns {db, coll}")
def _():
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s5b"})
        e = next_event(stream)
    assert e.get("ns") == {"db": db.name, "coll": coll.name}, f"ns {e.get('ns')!r}, event keys {list(e)}"


@check("resume_after=<event _id>: resumes after that event", required=True)
def _():
    with coll.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s6", "n": 1})
        coll.insert_one({"stream_id": "s6", "n": 2})
        first = next_event(stream)
        second = next_event(stream)
    assert (first["fullDocument"]["n"], second["fullDocument"]["n"]) == (1, 2)
    tokens["first"], tokens["second"] = first["_id"], second["_id"]
    coll.insert_one({"stream_id": "s6", "n": 3})  # written while nobody watches
    with coll.watch(full_document="updateLookup", resume_after=first["_id"],
                    max_await_time_ms=200) as stream:
        got = [next_event(stream)["fullDocument"]["n"], next_event(stream)["fullDocument"]["n"]]
    assert got == [2, 3], got
    return f"after n=1 got n={got}"


@check("resume_after=<token of the latest event>: only new events")
def _():
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s7", "n": 1})
        token = next_event(stream)["_id"]
    with coll.watch(resume_after=token, max_await_time_ms=200) as stream:
        assert stream.try_next() is None
        coll.insert_one({"stream_id": "s7", "n": 2})
        e = next_event(stream)
    assert e["fullDocument"]["n"] == 2, e


@check("stream.resume_token (postBatchResumeToken) before any event")
def _():
    with coll.watch(max_await_time_ms=200) as stream:
        stream.try_next()
        token = stream.resume_token
    assert token is not None, "no resume token without events"
    return f"{token}"


@check("start_after=<event _id>")
def _():
    with coll.watch(start_after=tokens["first"], max_await_time_ms=200) as stream:
        e = next_event(stream)
    assert e["fullDocument"]["n"] == 2, e


@check("start_at_operation_time")
def _():
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s8", "n": 1})
        e = next_event(stream)
    ts = e.get("clusterTime")
    assert ts is not None, f"event has no clusterTime: {e}"
    with coll.watch(start_at_operation_time=ts, max_await_time_ms=200) as stream:
        e2 = next_event(stream)
    assert e2["fullDocument"]["n"] == 1, e2
    return f"clusterTime {ts}"


@check("opening answer's operationTime (added by MongoLauncher): startAtOperationTime from it "
       "delivers exactly the later events")
def _():
    coll.insert_one({"stream_id": "s8b", "n": 0})  # before: must not be delivered
    opened = db.command("aggregate", coll.name, pipeline=[{"$changeStream": {}}], cursor={})
    op_time = opened["operationTime"]
    db.command("killCursors", coll.name, cursors=[opened["cursor"]["id"]])
    coll.insert_one({"stream_id": "s8b", "n": 1})
    with coll.watch([{"$match": {"fullDocument.stream_id": "s8b"}}], start_at_operation_time=op_time,
                    max_await_time_ms=200) as stream:
        e = next_event(stream)
    assert e["fullDocument"]["n"] == 1, e
    return f"operationTime {op_time}"


@check("pipeline [$match operationType insert]")
def _():
    oid = coll.insert_one({"stream_id": "s9", "n": 0}).inserted_id
    with coll.watch([{"$match": {"operationType": "insert"}}], max_await_time_ms=200) as stream:
        coll.update_one({"_id": oid}, {"$set": {"n": 1}})
        coll.insert_one({"stream_id": "s9", "n": 2})
        e = next_event(stream)
    assert e["operationType"] == "insert" and e["fullDocument"]["n"] == 2, e


@check("pipeline [$match fullDocument.stream_id]")
def _():
    with coll.watch([{"$match": {"fullDocument.stream_id": "keep"}}], max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "skip"})
        coll.insert_one({"stream_id": "keep"})
        e = next_event(stream)
    assert e["fullDocument"]["stream_id"] == "keep", e


@check("full_document='required' (MongoDB 6.0)")
def _():
    with coll.watch(full_document="required", max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s10"})
        next_event(stream)


@check("full_document_before_change='whenAvailable' (MongoDB 6.0)")
def _():
    with coll.watch(full_document_before_change="whenAvailable", max_await_time_ms=200) as stream:
        coll.insert_one({"stream_id": "s11"})
        next_event(stream)


@check("db.watch() (whole database)")
def _():
    with db.watch(max_await_time_ms=200) as stream:
        db["other"].insert_one({"x": 1})
        e = next_event(stream)
    return f"ns {e.get('ns')}"


@check("client.watch() (whole deployment)")
def _():
    with client.watch(max_await_time_ms=200) as stream:
        db["other"].insert_one({"x": 2})
        next_event(stream)


@check("drop collection -> drop/invalidate events")
def _():
    victim = db["victim"]
    victim.insert_one({"x": 1})
    with victim.watch(max_await_time_ms=200) as stream:
        victim.drop()
        ops = [next_event(stream)["operationType"]]
        ops.append(next_event(stream)["operationType"])
    return ops


@check("transactions (start_session + with_transaction)")
def _():
    with client.start_session() as session:
        session.with_transaction(lambda s: coll.insert_one({"tx": 1}, session=s))


try:
    client.drop_database(db.name)
finally:
    client.close()
if failures:
    print(f"MISSING what chatcore-mongo relies on: {', '.join(failures)}")
    sys.exit(1)
