//! Typed values that cross the layers: the ids that would otherwise be interchangeable strings
//! ([`ProjectId`], [`SessionId`], [`WebhookId`]) and a message's [`MessageStatus`].
//!
//! Each is stored in a TEXT column and maps to it directly, so storage binds and loads them
//! as they are; a transport turns them into its own form (a proto enum, a JSON string) at its
//! edge. A function that takes a project and a session can no longer get them swapped.

use std::fmt;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// An id stored as TEXT: a newtype over `String` that reads as a `&str` (through `Deref`)
/// wherever a plain string is wanted, but is only made from a string on purpose.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[derive(AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl<DB: Backend> ToSql<Text, DB> for $name
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                <str as ToSql<Text, DB>>::to_sql(self.0.as_str(), out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $name
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                String::from_sql(bytes).map($name)
            }
        }
    };
}

text_id! {
    /// A project (tenant): `projects.id`, and the `project_id` of everything it owns.
    ProjectId
}

text_id! {
    /// A session, which RK calls a device: `devices.id`, and the `device_id` of everything
    /// that belongs to one session.
    SessionId
}

text_id! {
    /// A webhook registration: `webhooks.id`, and the `webhook_id` of its deliveries and
    /// lanes.
    WebhookId
}

text_id! {
    /// A broadcast message template: `templates.id`.
    TemplateId
}

text_id! {
    /// An imported contact list: `contact_lists.id`.
    ContactListId
}

text_id! {
    /// A broadcast campaign: `broadcasts.id`.
    BroadcastId
}

/// Where an outbound message is: `queued` until the server acks it, then `sent`,
/// `delivered`, `read`; or `failed` for good. Statuses only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum MessageStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 5] = [
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ];

    /// The stored and documented name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    /// The status `name` names, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<DB: Backend> ToSql<Text, DB> for MessageStatus
where
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        <str as ToSql<Text, DB>>::to_sql(self.as_str(), out)
    }
}

impl<DB: Backend> FromSql<Text, DB> for MessageStatus
where
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let name = String::from_sql(bytes)?;
        MessageStatus::parse(&name).ok_or_else(|| format!("unknown message status {name:?}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_statuses_round_trip_by_name() {
        for s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MessageStatus::parse("Queued"), None);
        assert_eq!(MessageStatus::parse(""), None);
    }

    #[test]
    fn ids_read_as_their_string() {
        let id = SessionId::from("0190c2a4");
        assert_eq!(id, "0190c2a4");
        assert_eq!(id.len(), 8);
        assert_eq!(format!("{id}"), "0190c2a4");
        assert_eq!(String::from(id), "0190c2a4");
    }
}
