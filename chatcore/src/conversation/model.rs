//! The conversation types: groups, membership changes and read markers, and their validation.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::inbox::optional_rfc3339;
use crate::model::{check_id, rfc3339, ValidationError};

/// Upper bound of a group's title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;

/// What kind of conversation a `stream_id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConversationKind {
    /// Two participants; the `stream_id` is the hash of their ids.
    Direct,
    /// A group created with `POST /conversations`.
    Group,
}

/// A conversation, as `GET /conversations/{stream_id}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// 16 lowercase hex characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{16}$"))]
    pub stream_id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// The members, sorted.
    pub members: Vec<String>,
    /// The group's title, or null.
    pub title: Option<String>,
    /// Who created the group (null for a direct conversation).
    #[serde(default)]
    pub created_by: Option<String>,
    /// When the group was created (null for a direct conversation).
    #[serde(with = "optional_rfc3339", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub created_at: Option<DateTime<Utc>>,
}

impl Conversation {
    /// True when `user_id` is a member.
    pub fn has_member(&self, user_id: &str) -> bool {
        self.members
            .binary_search_by(|m| m.as_str().cmp(user_id))
            .is_ok()
    }

    /// The direct conversation of two participants.
    pub fn direct(a: &str, b: &str) -> Self {
        Self {
            stream_id: crate::stream_id::stream_id(a, b),
            kind: ConversationKind::Direct,
            members: sorted([a.to_owned(), b.to_owned()].into_iter().collect()),
            title: None,
            created_by: None,
            created_at: None,
        }
    }
}

fn sorted(mut members: Vec<String>) -> Vec<String> {
    members.sort();
    members.dedup();
    members
}

/// `POST /conversations`: a group as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewGroup {
    /// The creator, one of `members`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub created_by: String,
    /// 2 to `MAX_GROUP_MEMBERS` distinct user ids, the creator among them.
    pub members: Vec<String>,
    /// Optional title, at most 256 bytes, no control characters.
    #[serde(default)]
    pub title: Option<String>,
}

/// A group that passed validation, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGroup(Conversation);

impl NewGroup {
    /// Checks the ids, the size (2 to `max_members` distinct members, the creator among them)
    /// and the title, and makes the group with a new `stream_id`.
    ///
    /// ```
    /// use chatcore::conversation::NewGroup;
    /// let group = NewGroup {
    ///     created_by: "ann".into(),
    ///     members: vec!["ann".into(), "bob".into(), "cy".into()],
    ///     title: Some("trip".into()),
    /// };
    /// let valid = group.validate(256).unwrap().into_conversation();
    /// assert_eq!(valid.members, ["ann", "bob", "cy"]);
    /// assert_eq!(valid.stream_id.len(), 16);
    /// ```
    pub fn validate(self, max_members: usize) -> Result<ValidGroup, ValidationError> {
        check_id("created_by", &self.created_by)?;
        for member in &self.members {
            check_id("members", member)?;
        }
        let distinct = sorted(self.members.clone());
        if distinct.len() != self.members.len() {
            return invalid("members must be distinct");
        }
        if distinct.len() < 2 || distinct.len() > max_members {
            return invalid(&format!("a group has 2 to {max_members} members"));
        }
        if distinct.binary_search(&self.created_by).is_err() {
            return invalid("created_by must be one of the members");
        }
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        Ok(ValidGroup(Conversation {
            stream_id: new_group_stream_id(),
            kind: ConversationKind::Group,
            members: distinct,
            title: self.title,
            created_by: Some(self.created_by),
            created_at: Some(Utc::now().trunc_subsecs(3)),
        }))
    }
}

impl ValidGroup {
    /// The group to store.
    pub fn into_conversation(self) -> Conversation {
        self.0
    }
}

fn invalid<T>(reason: &str) -> Result<T, ValidationError> {
    Err(ValidationError::InvalidGroup(reason.to_owned()))
}

fn check_title(title: &str) -> Result<(), ValidationError> {
    if title.len() > MAX_TITLE_BYTES {
        return invalid(&format!("title is longer than {MAX_TITLE_BYTES} bytes"));
    }
    if title.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter("title"));
    }
    Ok(())
}

/// A new group's `stream_id`: 16 random lowercase hex characters (64 bits, so it does not meet
/// another group's or a direct conversation's id in practice).
pub fn new_group_stream_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A randomly keyed hasher is the standard library's source of per-process randomness.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    format!("{:016x}", hasher.finish())
}

/// `POST /conversations/{stream_id}/members`: members to add and to remove, by a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipChange {
    /// The acting member.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub by: String,
    /// Users to add.
    #[serde(default)]
    pub add: Vec<String>,
    /// Members to remove (`by` may remove itself: leaving the group).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A membership change that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMembershipChange {
    /// The acting member.
    pub by: String,
    /// Users to add, sorted and distinct.
    pub add: Vec<String>,
    /// Members to remove, sorted and distinct.
    pub remove: Vec<String>,
}

impl MembershipChange {
    /// Checks the ids: valid, something to change, no user both added and removed, and no list
    /// longer than `max_members`.
    pub fn validate(self, max_members: usize) -> Result<ValidMembershipChange, ValidationError> {
        check_id("by", &self.by)?;
        for user in self.add.iter().chain(&self.remove) {
            check_id("members", user)?;
        }
        if self.add.is_empty() && self.remove.is_empty() {
            return invalid("add or remove at least one member");
        }
        if self.add.len() > max_members || self.remove.len() > max_members {
            return invalid(&format!("a group has at most {max_members} members"));
        }
        let (add, remove) = (sorted(self.add), sorted(self.remove));
        if add.iter().any(|user| remove.binary_search(user).is_ok()) {
            return invalid("a user cannot be both added and removed");
        }
        Ok(ValidMembershipChange {
            by: self.by,
            add,
            remove,
        })
    }
}

impl ValidMembershipChange {
    /// The members after applying this change to `members` (sorted), or why it is refused.
    pub fn apply(
        &self,
        members: &[String],
        max_members: usize,
    ) -> Result<Vec<String>, super::ConversationError> {
        if members.binary_search(&self.by).is_err() {
            return Err(super::ConversationError::NotAMember(self.by.clone()));
        }
        let mut after: Vec<String> = members
            .iter()
            .filter(|m| self.remove.binary_search(m).is_err())
            .cloned()
            .chain(self.add.iter().cloned())
            .collect();
        after = sorted(after);
        if after.is_empty() {
            return Err(super::ConversationError::Limit(
                "a group keeps at least one member".to_owned(),
            ));
        }
        if after.len() > max_members {
            return Err(super::ConversationError::Limit(format!(
                "a group has at most {max_members} members"
            )));
        }
        Ok(after)
    }
}

impl ValidMembershipChange {
    /// `group` after this change, and who it removed, or why it is refused (see
    /// [`apply`](Self::apply)).
    pub fn apply_to(
        &self,
        group: &Conversation,
        max_members: usize,
    ) -> Result<MembersChanged, super::ConversationError> {
        let after = self.apply(&group.members, max_members)?;
        let removed = group
            .members
            .iter()
            .filter(|m| after.binary_search(m).is_err())
            .cloned()
            .collect();
        let conversation = Conversation {
            members: after,
            ..group.clone()
        };
        Ok(MembersChanged {
            conversation,
            removed,
        })
    }
}

/// The result of a membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersChanged {
    /// The group after the change.
    pub conversation: Conversation,
    /// Who was a member before and is not any more (their sockets are closed).
    pub removed: Vec<String>,
}

/// A user's read marker of one conversation: everything up to `message_id` is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadMarker {
    /// The conversation.
    pub stream_id: String,
    /// The reader.
    pub user_id: String,
    /// The newest message read.
    pub message_id: String,
    /// When the marker last moved.
    #[serde(with = "rfc3339")]
    pub read_at: DateTime<Utc>,
    /// True when this call moved the marker (false: it already was at or past the message).
    #[serde(skip)]
    pub moved: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: &[&str]) -> NewGroup {
        NewGroup {
            created_by: members.first().map_or("", |m| m).to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            title: None,
        }
    }

    #[test]
    fn a_group_has_two_to_max_distinct_members_with_its_creator() {
        assert!(group(&["a", "b"]).validate(2).is_ok());
        assert!(group(&["a"]).validate(5).is_err());
        assert!(group(&["a", "b", "c"]).validate(2).is_err());
        assert!(group(&["a", "a", "b"]).validate(5).is_err());
        let mut outsider = group(&["a", "b"]);
        outsider.created_by = "z".into();
        assert!(outsider.validate(5).is_err());
        assert!(group(&["a", ""]).validate(5).is_err());
        let mut titled = group(&["a", "b"]);
        titled.title = Some("x".repeat(MAX_TITLE_BYTES + 1));
        assert!(titled.validate(5).is_err());
    }

    #[test]
    fn group_ids_are_well_formed_and_distinct() {
        let (a, b) = (new_group_stream_id(), new_group_stream_id());
        assert!(crate::stream_id::is_well_formed(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_membership_change_applies_within_the_limits() {
        let members = vec!["a".to_owned(), "b".to_owned()];
        let change = |by: &str, add: &[&str], remove: &[&str]| MembershipChange {
            by: by.into(),
            add: add.iter().map(|m| (*m).to_owned()).collect(),
            remove: remove.iter().map(|m| (*m).to_owned()).collect(),
        };
        let added = change("a", &["c"], &["b"]).validate(3).expect("valid");
        assert_eq!(added.apply(&members, 3).expect("applies"), ["a", "c"]);
        let outsider = change("z", &["c"], &[]).validate(3).expect("valid");
        assert!(matches!(
            outsider.apply(&members, 3),
            Err(super::super::ConversationError::NotAMember(_))
        ));
        let too_many = change("a", &["c", "d"], &[]).validate(3).expect("valid");
        assert!(too_many.apply(&members, 3).is_err());
        let everyone = change("a", &[], &["a", "b"]).validate(3).expect("valid");
        assert!(everyone.apply(&members, 3).is_err());
        assert!(change("a", &[], &[]).validate(3).is_err());
        assert!(change("a", &["c"], &["c"]).validate(3).is_err());
    }
}
