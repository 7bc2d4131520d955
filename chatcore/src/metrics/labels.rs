//! The label values of the counters.

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Its label value in metrics and logs.
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }

        #[cfg(feature = "prometheus")]
        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.label())
            }
        }
    };
}

label_enum! {
    /// How an event from the change feed ended (`outcome`).
    Outcome {
        /// Delivered to every target: `success`.
        Success => "success",
        /// Retries exhausted; the failure policy ran: `failed`.
        Failed => "failed",
        /// Not processed, see [`DropReason`]: `dropped`.
        Dropped => "dropped",
    }
}

label_enum! {
    /// Why an event was dropped without delivery (`reason`).
    DropReason {
        /// Already processed (the event store had its key): `duplicate`.
        Duplicate => "duplicate",
        /// The record could not be decoded: `invalid_format`.
        InvalidFormat => "invalid_format",
        /// A change this consumer does not act on (update, delete, other collections):
        /// `ignored_op`.
        IgnoredOp => "ignored_op",
        /// Suppressed by a notification throttle: `throttled`.
        Throttled => "throttled",
    }
}

label_enum! {
    /// Per-session delivery result (`result` of the deliveries counter).
    DeliveryResult {
        /// Queued to the session: `delivered`.
        Delivered => "delivered",
        /// The session was dead or its queue full: `failed`.
        Failed => "failed",
        /// A session closed because its queue was full (also counted as `failed`):
        /// `slow_client_closed`.
        SlowClientClosed => "slow_client_closed",
    }
}

label_enum! {
    /// How an e-mail of the e-mail consumer ended (`result`).
    EmailResult {
        /// Handed to the mail server: `sent`.
        Sent => "sent",
        /// The mail server or the directory failed (the attempt is retried): `failed`.
        Failed => "failed",
        /// The recipient is not in the user e-mail directory, skipped: `unknown_recipient`.
        UnknownRecipient => "unknown_recipient",
        /// The address or message was refused before sending, skipped: `invalid`.
        Invalid => "invalid",
        /// The receiver of a chat message was online, no e-mail: `receiver_online`.
        ReceiverOnline => "receiver_online",
    }
}

/// A conversation write the persistence API counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConversationChange {
    /// `POST /conversations`.
    GroupCreated,
    /// `POST /conversations/{stream_id}/members`.
    MembersChanged,
    /// `POST /chat/read` that moved a marker.
    ReadMarkerMoved,
}

label_enum! {
    /// What became of a frame a client sent on its chat socket (`outcome`).
    ClientFrameOutcome {
        /// A typing frame relayed to the stream's other protocol-2 sessions: `relayed`.
        Relayed => "relayed",
        /// A typing frame over the session's rate (2 per second): `throttled`.
        Throttled => "throttled",
        /// Not a frame the server acts on (malformed, unknown type, binary, or on a protocol-1
        /// session): `ignored`.
        Ignored => "ignored",
    }
}
