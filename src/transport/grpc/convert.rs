//! Conversions between protobuf well-known types and the service layer's values.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue};
use serde_json::{Map, Number, Value};

use crate::proto::v1::{MessageStatus, MessageType, SessionState as PbState};
use crate::sessions::SessionState;
use crate::values::MessageStatus as Status;

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The inverse of [`timestamp`]: Unix milliseconds.
pub fn millis(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Proto3 strings cannot be absent; an empty one means "not given".
pub fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

pub fn struct_to_json(s: Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: PbValue) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers come back as integers, as a JSON client sent them.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

pub fn json_to_struct(map: Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    PbValue { kind: Some(kind) }
}

pub fn status_to_proto(s: Status) -> MessageStatus {
    match s {
        Status::Queued => MessageStatus::Queued,
        Status::Sent => MessageStatus::Sent,
        Status::Delivered => MessageStatus::Delivered,
        Status::Read => MessageStatus::Read,
        Status::Failed => MessageStatus::Failed,
    }
}

/// The status a proto value names: `None` when unspecified, `"unknown"` for a number the
/// enum does not have (the service layer refuses it with its own message).
pub fn status_name(s: i32) -> Option<&'static str> {
    let status = match MessageStatus::try_from(s) {
        Ok(MessageStatus::Unspecified) => return None,
        Ok(MessageStatus::Queued) => Status::Queued,
        Ok(MessageStatus::Sent) => Status::Sent,
        Ok(MessageStatus::Delivered) => Status::Delivered,
        Ok(MessageStatus::Read) => Status::Read,
        Ok(MessageStatus::Failed) => Status::Failed,
        Err(_) => return Some("unknown"),
    };
    Some(status.as_str())
}

/// The inverse of [`status_name`] for a REST filter: unset is unspecified, a name the enum
/// lacks an out-of-range number, so the service layer answers it as it answers gRPC.
pub fn status_from_name(s: Option<&str>) -> i32 {
    match s.filter(|s| !s.is_empty()) {
        None => MessageStatus::Unspecified as i32,
        Some(name) => Status::parse(name).map_or(-1, |s| status_to_proto(s) as i32),
    }
}

pub fn kind_to_proto(s: &str) -> MessageType {
    match s {
        "text" => MessageType::Text,
        "image" => MessageType::Image,
        "document" => MessageType::Document,
        "video" => MessageType::Video,
        "audio" => MessageType::Audio,
        _ => MessageType::Unspecified,
    }
}

/// The type a proto value names; unspecified is text, an unknown number `"unknown"`.
pub fn kind_name(t: i32) -> &'static str {
    match MessageType::try_from(t) {
        Ok(MessageType::Unspecified | MessageType::Text) => "text",
        Ok(MessageType::Image) => "image",
        Ok(MessageType::Document) => "document",
        Ok(MessageType::Video) => "video",
        Ok(MessageType::Audio) => "audio",
        Err(_) => "unknown",
    }
}

/// `None` for unspecified (text); an unknown number is passed on to be rejected.
pub fn kind_from_proto(t: i32) -> Option<String> {
    (t != MessageType::Unspecified as i32).then(|| kind_name(t).to_owned())
}

/// A REST `type` as the proto enum: the names the service layer accepts (in any case), an
/// out-of-range number for any other so the service layer refuses it where it would.
pub fn kind_from_name(s: Option<&str>) -> i32 {
    match s {
        None => MessageType::Unspecified as i32,
        Some(name) => match crate::domain::media::MessageKind::parse(name) {
            Ok(k) => kind_to_proto(k.as_str()) as i32,
            Err(_) => -1,
        },
    }
}

pub fn state_to_proto(s: SessionState) -> PbState {
    match s {
        SessionState::Pending => PbState::Pending,
        SessionState::Qr => PbState::Qr,
        SessionState::Connecting => PbState::Connecting,
        SessionState::Connected => PbState::Connected,
        SessionState::Disconnected => PbState::Disconnected,
        SessionState::LoggedOut => PbState::LoggedOut,
        SessionState::Banned => PbState::Banned,
        SessionState::Failed => PbState::Failed,
    }
}

/// The inverse of [`state_to_proto`]; unspecified (or unknown) is pending.
pub fn state_from_proto(s: i32) -> SessionState {
    match PbState::try_from(s).unwrap_or_default() {
        PbState::Unspecified | PbState::Pending => SessionState::Pending,
        PbState::Qr => SessionState::Qr,
        PbState::Connecting => SessionState::Connecting,
        PbState::Connected => SessionState::Connected,
        PbState::Disconnected => SessionState::Disconnected,
        PbState::LoggedOut => SessionState::LoggedOut,
        PbState::Banned => SessionState::Banned,
        PbState::Failed => SessionState::Failed,
    }
}
