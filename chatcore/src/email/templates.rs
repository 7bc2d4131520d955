//! The e-mails of the product: a new chat message for its offline receiver, a purchase for the
//! shop owner.

use crate::model::{ChatMessage, PurchaseUpdate};

use super::{EmailMessage, UserEmail};

/// Longest message content quoted in a chat e-mail; longer content is cut with `…`.
pub const MAX_QUOTED_CONTENT: usize = 2000;

fn quote(content: &str) -> String {
    if content.len() <= MAX_QUOTED_CONTENT {
        return content.to_owned();
    }
    let mut end = MAX_QUOTED_CONTENT;
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &content[..end])
}

/// The e-mail telling `recipient` (the receiver) about a new chat message: subject
/// `New message from {sender}`, where the sender is `sender_name` when known, else its id.
pub fn chat_email(
    message: &ChatMessage,
    recipient: &UserEmail,
    sender_name: Option<&str>,
) -> EmailMessage {
    let sender = sender_name
        .filter(|name| !name.trim().is_empty())
        .unwrap_or(&message.sender_id);
    let body = format!(
        "Hello {name},\n\n{sender} sent you a message:\n\n{content}\n\nSent at {at}. Open the chat to reply.\n",
        name = recipient.name,
        content = quote(&message.content),
        at = message.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    EmailMessage {
        to: recipient.email.clone(),
        to_name: Some(recipient.name.clone()).filter(|n| !n.trim().is_empty()),
        subject: format!("New message from {sender}"),
        body,
    }
}

/// The e-mail telling `recipient` (the shop owner) about a purchase: subject
/// `New order {order_id}: {product_name}`.
pub fn purchase_email(update: &PurchaseUpdate, recipient: &UserEmail) -> EmailMessage {
    let body = format!(
        "Hello {name},\n\n{buyer} bought {product}.\n\nOrder: {order}\nAmount: {amount:.2} {currency}\nStatus: {status}\nPurchased at: {at}\n",
        name = recipient.name,
        buyer = update.buyer_id,
        product = update.product_name,
        order = update.order_id,
        amount = update.amount,
        currency = update.currency,
        status = update.status,
        at = update.purchased_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    EmailMessage {
        to: recipient.email.clone(),
        to_name: Some(recipient.name.clone()).filter(|n| !n.trim().is_empty()),
        subject: format!("New order {}: {}", update.order_id, update.product_name),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::fixtures::{message, purchase, user};

    #[test]
    fn the_chat_template_names_the_sender_and_quotes_the_message() {
        let email = chat_email(
            &message("alice", "bob", "see you at 5"),
            &user("bob", "bob@example.com", "Bob"),
            Some("Alice"),
        );
        assert_eq!(email.to, "bob@example.com");
        assert_eq!(email.to_name.as_deref(), Some("Bob"));
        assert_eq!(email.subject, "New message from Alice");
        assert!(email.body.starts_with("Hello Bob,\n"), "{}", email.body);
        assert!(email
            .body
            .contains("Alice sent you a message:\n\nsee you at 5\n"));
        assert!(email.body.contains("2026-01-02T03:04:05Z"));
        let anonymous = chat_email(
            &message("alice", "bob", "hi"),
            &user("bob", "bob@example.com", "Bob"),
            None,
        );
        assert_eq!(anonymous.subject, "New message from alice");
        let long = "é".repeat(MAX_QUOTED_CONTENT);
        let cut = chat_email(
            &message("alice", "bob", &long),
            &user("bob", "bob@example.com", "Bob"),
            None,
        );
        assert!(cut.body.contains('…'));
        assert!(cut.body.len() < long.len());
    }

    #[test]
    fn the_purchase_template_lists_the_order() {
        let email = purchase_email(&purchase(), &user("shop", "owner@example.com", "Owner"));
        assert_eq!(email.to, "owner@example.com");
        assert_eq!(email.subject, "New order o-42: Teapot");
        for line in [
            "Hello Owner,",
            "bob bought Teapot.",
            "Order: o-42",
            "Amount: 12.50 EUR",
            "Status: completed",
            "Purchased at: 2026-01-02T03:04:05Z",
        ] {
            assert!(email.body.contains(line), "{line:?} in {}", email.body);
        }
    }
}
