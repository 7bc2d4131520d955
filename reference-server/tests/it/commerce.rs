//! Commerce notifications end to end: documents inserted into the `purchases`, `payments` and
//! `shipments` collections of MongoDB reach the right users' notification sockets through the
//! change streams of role `all`; bad documents are dropped and counted.

use crate::common;

use std::time::Duration;

use chatcore::metrics::DropReason;
use common::{settings, TestServer, WAIT};
use mongodb::bson::{doc, DateTime as BsonDateTime, Document};
use serde_json::json;

fn mongo_uri() -> String {
    std::env::var("CHATCORE_TEST_MONGO_URI").expect("CHATCORE_TEST_MONGO_URI")
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn purchases_payments_and_shipments_notify_the_users_they_name() {
    let settings = settings(&["--mongo-uri", &mongo_uri()]);
    let database_name = settings.mongo.database.clone();
    let server = TestServer::start_with(settings, |backends| backends).await;
    let client = mongodb::Client::with_uri_str(mongo_uri())
        .await
        .expect("client");
    let database = client.database(&database_name);

    let mut shop = server.subscribe_notifications("shop-1").await;
    let mut buyer = server.subscribe_notifications("buyer-1").await;
    let mut payer = server.subscribe_notifications("payer-1").await;
    let mut receiver = server.subscribe_notifications("receiver-1").await;

    let purchased_at = BsonDateTime::parse_rfc3339_str("2026-11-01T10:00:00Z").expect("date");
    database
        .collection::<Document>("purchases")
        .insert_one(doc! {
            "order_id": "o-1", "buyer_id": "buyer-1", "shop_owner_id": "shop-1",
            "product_name": "Lamp", "amount": 25.5, "currency": "EUR", "status": "completed",
            "purchased_at": purchased_at,
        })
        .await
        .expect("insert purchase");
    for socket in [&mut shop, &mut buyer] {
        let envelope = socket.next_json().await;
        assert_eq!(envelope["notification_type"], "purchase_notification");
        assert_eq!(
            envelope["payload"],
            json!({"order_id": "o-1", "buyer_id": "buyer-1", "shop_owner_id": "shop-1",
                   "product_name": "Lamp", "amount": 25.5, "currency": "EUR",
                   "status": "completed", "purchased_at": "2026-11-01T10:00:00.000Z"})
        );
    }

    database
        .collection::<Document>("payments")
        .insert_one(doc! {
            "user_id": "payer-1", "order_id": "o-2", "amount": 10, "currency": "EUR",
            "due_date": "2026-11-20T00:00:00Z", "days_overdue": 7, "message": "please pay",
        })
        .await
        .expect("insert payment");
    let envelope = payer.next_json().await;
    assert_eq!(
        envelope["notification_type"],
        "payment_reminder_notification"
    );
    assert_eq!(envelope["payload"]["order_id"], "o-2");
    assert_eq!(envelope["payload"]["days_overdue"], 7);
    assert!(envelope["payload"].get("user_id").is_none());

    let shipments = database.collection::<Document>("shipments");
    shipments
        .insert_one(doc! {
            "user_id": "receiver-1", "order_id": "o-3", "tracking_number": "TRK1",
            "status": "in_transit", "location": "Lyon",
            "estimated_delivery": "2026-11-30T12:00:00Z", "updated_at": "2026-11-27T08:00:00Z",
        })
        .await
        .expect("insert shipment");
    let envelope = receiver.next_json().await;
    assert_eq!(
        envelope["notification_type"],
        "shipping_update_notification"
    );
    assert_eq!(envelope["payload"]["status"], "in_transit");

    // Bad documents: dropped and counted, and the consumer moves on to the next good one.
    database
        .collection::<Document>("purchases")
        .insert_many([
            doc! { "order_id": "o-4", "buyer_id": "buyer-1" },
            doc! { "order_id": "o-5", "buyer_id": "", "shop_owner_id": "shop-1",
            "product_name": "Lamp", "amount": 1, "currency": "EUR", "status": "completed",
            "purchased_at": purchased_at },
        ])
        .await
        .expect("insert bad purchases");
    shipments
        .insert_one(doc! { "order_id": "o-6", "status": "lost" })
        .await
        .expect("insert bad shipment");
    shipments
        .insert_one(doc! {
            "user_id": "receiver-1", "order_id": "o-3", "tracking_number": "TRK1",
            "status": "delivered", "location": "Paris",
            "estimated_delivery": "2026-11-30T12:00:00Z", "updated_at": "2026-11-29T08:00:00Z",
        })
        .await
        .expect("insert shipment");
    let envelope = receiver.next_json().await;
    assert_eq!(envelope["payload"]["status"], "delivered");
    tokio::time::timeout(WAIT, async {
        while server
            .metrics
            .dropped_count("commerce-purchases", DropReason::InvalidFormat)
            < 2
            || server
                .metrics
                .dropped_count("commerce-shipments", DropReason::InvalidFormat)
                < 1
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("bad documents counted");
    assert_eq!(
        server
            .metrics
            .dropped_count("commerce-purchases", DropReason::InvalidFormat),
        2
    );
    server.stop().await.expect("clean stop");
}
