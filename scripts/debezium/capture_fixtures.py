"""Captures what the real Debezium MongoDB connector writes, as test fixtures.

Usage (the services up, their variables exported):
    eval "$(scripts/services.sh up)"
    .cache/venv/bin/python scripts/debezium/capture_fixtures.py chatcore/tests/data/debezium

Runs one standalone Kafka Connect worker (`scripts/services.sh connect-run`) with one connector per
variant below, each derived from the shipped deploy/debezium/chat.json or commerce.json by the
overrides listed, all streaming from the MongoDB wire server of scripts/services.sh. Then writes
the same documents as a user's server would (fixed ids and dates), reads every variant's topic
back with Kafka's console consumer and stores each record as it came off the topic: one line per
record, the key's bytes, a tab, the value's bytes (`null` for none). JsonConverter writes compact
JSON without tabs or newlines, so a line is the record byte for byte.
"""

import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

import bson
import pymongo

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATABASE = "chatcore"
SCHEMAS_ON = {"key.converter.schemas.enable": "true", "value.converter.schemas.enable": "true"}
NO_TRANSFORMS = {"transforms": None}
DEFAULT_KEY = {"transforms": "unwrap"}
TOPIC_CREATION = {"topic.creation.default.partitions": "1", "topic.creation.default.replication.factor": "-1"}

# name -> (shipped file, collection, overrides); None removes a setting.
VARIANTS = {
    "chat-envelope": ("chat.json", "chat", NO_TRANSFORMS),
    "chat-envelope-schema": ("chat.json", "chat", {**NO_TRANSFORMS, **SCHEMAS_ON}),
    "chat-envelope-change-streams": ("chat.json", "chat", {**NO_TRANSFORMS, "capture.mode": "change_streams"}),
    "chat-flattened": ("chat.json", "chat", {}),
    "chat-flattened-schema": ("chat.json", "chat", SCHEMAS_ON),
    # The transform with its defaults: no add.fields, Debezium's own key, deletes as tombstones.
    "chat-flattened-defaults": ("chat.json", "chat", {**DEFAULT_KEY, "transforms.unwrap.add.fields": None,
                                                      "transforms.unwrap.delete.tombstone.handling.mode": None,
                                                      "tombstones.on.delete": None}),
    # Partial updates (no full document) and deletes rewritten as `__deleted`.
    "chat-flattened-rewrite": ("chat.json", "chat", {**DEFAULT_KEY, "capture.mode": "change_streams",
                                                     "transforms.unwrap.delete.tombstone.handling.mode": "rewrite"}),
    "chat-flattened-rewrite-schema": ("chat.json", "chat", {**DEFAULT_KEY, **SCHEMAS_ON,
                                                            "capture.mode": "change_streams",
                                                            "transforms.unwrap.delete.tombstone.handling.mode": "rewrite"}),
}
for collection in ("purchases", "payments", "shipments"):
    one = {"capture.scope": "collection", "capture.target": f"{DATABASE}.{collection}",
           "collection.include.list": f"{DATABASE}.{collection}"}
    VARIANTS[f"{collection}-flattened"] = ("commerce.json", collection, one)
    VARIANTS[f"{collection}-flattened-schema"] = ("commerce.json", collection, {**one, **SCHEMAS_ON})
    VARIANTS[f"{collection}-envelope"] = ("commerce.json", collection, {**one, **NO_TRANSFORMS})


def at(text):
    return datetime.datetime.fromisoformat(text)


def oid(n):
    return bson.ObjectId(f"6b0f438e66d0efe952bb{n:04x}")


def write_documents(db):
    """What each variant captures: per chat stream in order, then commerce; returns the record count
    per collection (one per change; the delete yields none, one or two depending on the variant)."""
    chat = db.chat
    # stream_id is chatcore's id of the two users' conversation (chatcore::stream_id).
    for n, (stream, sender, receiver, content) in enumerate([
            ("a83ab2505ace9a87", "alice", "bob", "real debezium message 1"),
            ("7b28e95659ec2171", "user123", "user456", "hello from another conversation"),
            ("a83ab2505ace9a87", "alice", "bob", "real debezium message 2 \u00e9\U0001f44b")]):
        chat.insert_one({"_id": oid(n + 1), "content": content,
                         "created_at": at("2026-12-01T10:00:0%d.123+00:00" % n),
                         "stream_id": stream, "sender_id": sender, "receiver_id": receiver})
    chat.update_one({"_id": oid(1)}, {"$set": {"content": "real debezium message 1, edited"}})
    chat.delete_one({"_id": oid(2)})
    db.purchases.insert_one({"_id": oid(16), "order_id": "order-1", "buyer_id": "bob", "shop_owner_id": "carol",
                             "product_name": "Teapot", "amount": 24.5, "currency": "EUR", "status": "paid",
                             "purchased_at": at("2026-12-01T09:30:00+00:00")})
    db.payments.insert_one({"_id": oid(17), "user_id": "bob", "order_id": "order-2", "amount": 12.0,
                            "currency": "EUR", "due_date": at("2026-11-20T00:00:00+00:00"), "days_overdue": 11,
                            "message": "please pay"})
    db.shipments.insert_one({"_id": oid(18), "user_id": "bob", "order_id": "order-1", "tracking_number": "TRK-1",
                             "status": "in_transit", "location": "Lyon",
                             "estimated_delivery": at("2026-12-03T12:00:00+00:00"),
                             "updated_at": at("2026-12-01T11:00:00+00:00")})
    db.shipments.update_one({"_id": oid(18)}, {"$set": {"status": "delivered", "location": "Paris",
                                                        "updated_at": at("2026-12-02T08:00:00+00:00")}})


def connector(name, shipped, overrides, prefix):
    config = json.loads((ROOT / "deploy/debezium" / shipped).read_text())["config"]
    for key, value in {**overrides, **TOPIC_CREATION}.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    if config.get("transforms") in (None, "unwrap"):
        for key in [k for k in config if k.startswith("transforms.") and not k.startswith("transforms.unwrap.")]:
            del config[key]
        if "transforms" not in config:
            for key in [k for k in config if k.startswith("transforms.")]:
                del config[key]
    config["topic.prefix"] = prefix
    return {"name": name, "config": config}


def status(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/{name}/status", timeout=5) as answer:
            return json.load(answer)
    except OSError:
        return None


def consume(topic):
    """The topic's records as Kafka's console consumer prints them, key and value split by a tab."""
    return subprocess.run(
        [str(ROOT / "scripts/services.sh"), "kafka-run", "org.apache.kafka.tools.consumer.ConsoleConsumer",
         "--bootstrap-server", os.environ["CHATCORE_TEST_KAFKA"], "--topic", topic, "--from-beginning",
         "--timeout-ms", "5000", "--formatter-property", "print.key=true",
         "--formatter-property", "key.separator=\t"],
        capture_output=True, check=False).stdout


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    port = os.environ["CHATCORE_TEST_CONNECT_PORT"]
    mongo = pymongo.MongoClient(os.environ["CHATCORE_TEST_MONGO_URI"])
    mongo.drop_database(DATABASE)
    run = f"fx{int(time.time())}"
    work = pathlib.Path(tempfile.mkdtemp(prefix="debezium-fixtures-"))
    worker = work / "worker.properties"
    shipped_worker = (ROOT / "deploy/debezium/worker-standalone.properties").read_text()
    lines = [l for l in shipped_worker.splitlines()
             if not l.startswith(("bootstrap.servers=", "offset.storage.file.filename=", "listeners=", "plugin.path="))]
    lines += [f"bootstrap.servers={os.environ['CHATCORE_TEST_KAFKA']}", f"offset.storage.file.filename={work}/offsets",
              f"listeners=http://127.0.0.1:{port}"]
    worker.write_text("\n".join(lines) + "\n")
    files = []
    for name, (shipped, _, overrides) in VARIANTS.items():
        path = work / f"{name}.json"
        path.write_text(json.dumps(connector(name, shipped, overrides, f"{run}.{name}")))
        files.append(str(path))
    mongo_port = os.environ["CHATCORE_TEST_MONGO_URI"].split("//", 1)[1].split("/", 1)[0]
    env = {**os.environ, "CHATCORE_DEBEZIUM_MONGODB_URI": f"mongodb://{mongo_port}/?replicaSet=rs0",
           "CHATCORE_DEBEZIUM_DATABASE": DATABASE, "CHATCORE_DEBEZIUM_TOPIC_PREFIX": "unused"}
    log = open(work / "connect.log", "w")
    worker_process = subprocess.Popen([str(ROOT / "scripts/services.sh"), "connect-run", str(worker), *files],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            states = [status(port, name) for name in VARIANTS]
            if all(s and s["connector"]["state"] == "RUNNING" and s["tasks"] and s["tasks"][0]["state"] == "RUNNING"
                   for s in states):
                text = (work / "connect.log").read_text()
                if text.count("Starting streaming") >= len(VARIANTS):
                    break
            if time.time() > deadline or worker_process.poll() is not None:
                sys.exit(f"the connectors did not start; see {work}/connect.log")
            time.sleep(0.5)
        write_documents(mongo[DATABASE])
        # The last change written (the shipment's update) is on its topic: the connectors are through.
        while len(consume(f"{run}.shipments-flattened.{DATABASE}.shipments").splitlines()) < 2:
            if time.time() > deadline:
                sys.exit(f"the shipment's update never arrived; see {work}/connect.log")
        for name, (_, collection, _) in VARIANTS.items():
            topic = f"{run}.{name}.{DATABASE}.{collection}"
            records = consume(topic)
            (out / f"{name}.records").write_bytes(records)
            print(f"{name}: {len(records.splitlines())} records from {topic}")
    finally:
        worker_process.terminate()
        worker_process.wait(timeout=60)


if __name__ == "__main__":
    main()
