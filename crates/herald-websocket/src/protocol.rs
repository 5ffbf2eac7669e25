//! What a client may send on `/ws`.
//!
//! The Backport IG names `bind-with-token` but fixes no wire format, so both forms seen in
//! the field are read:
//! - text: `bind-with-token <token> [<lastEventNumber>]`, `unbind-from-token <token>`,
//!   `unbind <subscription id>`;
//! - Medplum's JSON: `{"type":"bind-with-token","payload":{"token":"…"}}`, optionally with
//!   `"lastEventNumber"`: a number for every subscription of the token, or an object
//!   `{"<subscription id>": <number>}`; `unbind-from-token` alike; `{"type":"ping"}`.
//!
//! The R4 classic protocol (`bind <subscription id>`, answered `bound <id>`, then
//! `ping <id>` on each event) is kept for legacy clients.

use std::collections::HashMap;

use serde_json::Value;

/// From which event number on a client wants stored events replayed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LastEventNumbers {
    /// No replay: only events after the bind.
    #[default]
    None,
    /// The same number for every subscription of the token.
    All(i64),
    /// Per subscription id; subscriptions not named get no replay.
    PerSubscription(HashMap<String, i64>),
}

impl LastEventNumbers {
    /// The last event number the client has seen of `subscription_id`, if it said.
    pub fn for_subscription(&self, subscription_id: &str) -> Option<i64> {
        match self {
            Self::None => None,
            Self::All(n) => Some(*n),
            Self::PerSubscription(map) => map.get(subscription_id).copied(),
        }
    }
}

/// How a reply is written: the classic vocabulary answers in text, the Backport one in
/// FHIR JSON (its clients parse every frame as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Classic,
    Backport,
}

/// One parsed client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    BindWithToken {
        token: String,
        last_event_numbers: LastEventNumbers,
    },
    UnbindFromToken {
        token: String,
    },
    Unbind {
        subscription_id: String,
    },
    /// R4 classic `bind <id>`.
    Bind {
        subscription_id: String,
    },
    /// Medplum's application-level keepalive, answered `{"type":"pong"}`.
    Ping,
}

impl ClientCommand {
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Bind { .. } | Self::Unbind { .. } => Dialect::Classic,
            _ => Dialect::Backport,
        }
    }
}

/// A message that could not be read; the text is safe to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// Reads one text message.
pub fn parse(text: &str) -> Result<ClientCommand, ProtocolError> {
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let mut words = text.split_ascii_whitespace();
    let verb = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let command = match (verb, args.as_slice()) {
        ("bind-with-token", [token]) => ClientCommand::BindWithToken {
            token: token_text(token)?,
            last_event_numbers: LastEventNumbers::None,
        },
        ("bind-with-token", [token, last]) => ClientCommand::BindWithToken {
            token: token_text(token)?,
            last_event_numbers: LastEventNumbers::All(event_number(last)?),
        },
        ("unbind-from-token", [token]) => ClientCommand::UnbindFromToken {
            token: token_text(token)?,
        },
        ("unbind", [id]) => ClientCommand::Unbind {
            subscription_id: subscription_id(id)?,
        },
        ("bind", [id]) => ClientCommand::Bind {
            subscription_id: subscription_id(id)?,
        },
        ("bind-with-token" | "unbind-from-token" | "unbind" | "bind", _) => {
            return refuse(format!("'{verb}' takes {}", usage(verb)))
        }
        _ => return refuse(
            "unknown message; expected bind-with-token <token> [<lastEventNumber>], unbind-from-token <token>, unbind <id> or bind <id>",
        ),
    };
    Ok(command)
}

fn usage(verb: &str) -> &'static str {
    match verb {
        "bind-with-token" => "a token and optionally the last event number seen",
        "unbind-from-token" => "a token",
        _ => "one subscription id",
    }
}

fn parse_json(text: &str) -> Result<ClientCommand, ProtocolError> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return refuse("the message is not valid JSON");
    };
    let payload = message.get("payload");
    let token = || match payload.and_then(|p| p.get("token")).and_then(Value::as_str) {
        Some(token) => token_text(token),
        None => refuse("payload.token is required"),
    };
    match message.get("type").and_then(Value::as_str) {
        Some("bind-with-token") => Ok(ClientCommand::BindWithToken {
            token: token()?,
            last_event_numbers: json_last_event_numbers(
                payload.and_then(|p| p.get("lastEventNumber")),
            )?,
        }),
        Some("unbind-from-token") => Ok(ClientCommand::UnbindFromToken { token: token()? }),
        Some("ping") => Ok(ClientCommand::Ping),
        _ => refuse("type must be bind-with-token, unbind-from-token or ping"),
    }
}

fn json_last_event_numbers(value: Option<&Value>) -> Result<LastEventNumbers, ProtocolError> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0).ok_or(()),
        // Backport event numbers travel as strings.
        Value::String(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(()),
        _ => Err(()),
    };
    let bad = |()| {
        ProtocolError("payload.lastEventNumber must be a non-negative event number or an object of subscription id to event number".into())
    };
    match value {
        None | Some(Value::Null) => Ok(LastEventNumbers::None),
        Some(Value::Object(map)) => {
            let mut numbers = HashMap::with_capacity(map.len());
            for (id, v) in map {
                let n = number(v).map_err(bad)?;
                numbers.insert(subscription_id(id)?, n);
            }
            Ok(LastEventNumbers::PerSubscription(numbers))
        }
        Some(v) => number(v).map(LastEventNumbers::All).map_err(bad),
    }
}

fn token_text(token: &str) -> Result<String, ProtocolError> {
    if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("the token is malformed");
    }
    Ok(token.to_owned())
}

fn event_number(text: &str) -> Result<i64, ProtocolError> {
    match text.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => refuse(format!("'{text}' is not an event number")),
    }
}

/// A FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn subscription_id(text: &str) -> Result<String, ProtocolError> {
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return refuse("a subscription id must be a FHIR id ([A-Za-z0-9-.]{1,64})");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(token: &str, last: LastEventNumbers) -> ClientCommand {
        ClientCommand::BindWithToken {
            token: token.into(),
            last_event_numbers: last,
        }
    }

    #[test]
    fn reads_the_text_forms() {
        assert_eq!(
            parse("bind-with-token abc"),
            Ok(bind("abc", LastEventNumbers::None))
        );
        assert_eq!(
            parse("bind-with-token abc 17\n"),
            Ok(bind("abc", LastEventNumbers::All(17)))
        );
        assert_eq!(
            parse("unbind-from-token abc"),
            Ok(ClientCommand::UnbindFromToken {
                token: "abc".into()
            })
        );
        assert_eq!(
            parse("unbind sub-1"),
            Ok(ClientCommand::Unbind {
                subscription_id: "sub-1".into()
            })
        );
        assert_eq!(
            parse("bind sub-1"),
            Ok(ClientCommand::Bind {
                subscription_id: "sub-1".into()
            })
        );
    }

    #[test]
    fn reads_the_json_forms() {
        assert_eq!(
            parse(r#"{"type":"bind-with-token","payload":{"token":"abc"}}"#),
            Ok(bind("abc", LastEventNumbers::None))
        );
        assert_eq!(
            parse(r#"{"type":"bind-with-token","payload":{"token":"abc","lastEventNumber":5}}"#),
            Ok(bind("abc", LastEventNumbers::All(5)))
        );
        let per = parse(
            r#"{"type":"bind-with-token","payload":{"token":"abc","lastEventNumber":{"a":3,"b":"9"}}}"#,
        )
        .expect("valid");
        let ClientCommand::BindWithToken {
            last_event_numbers, ..
        } = per
        else {
            panic!("not a bind: {per:?}")
        };
        assert_eq!(last_event_numbers.for_subscription("a"), Some(3));
        assert_eq!(last_event_numbers.for_subscription("b"), Some(9));
        assert_eq!(last_event_numbers.for_subscription("c"), None);
        assert_eq!(
            parse(r#"{"type":"unbind-from-token","payload":{"token":"abc"}}"#),
            Ok(ClientCommand::UnbindFromToken {
                token: "abc".into()
            })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientCommand::Ping));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for text in [
            "",
            "hello",
            "bind",
            "bind a b",
            "bind ../etc",
            "bind-with-token",
            "bind-with-token abc -1",
            "bind-with-token abc x",
            "{not json",
            r#"{"type":"bind-with-token"}"#,
            r#"{"type":"bind-with-token","payload":{"token":"a","lastEventNumber":-2}}"#,
            r#"{"type":"bind-with-token","payload":{"token":"a","lastEventNumber":{"b":true}}}"#,
            r#"{"type":"subscribe"}"#,
        ] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn dialects_follow_the_vocabulary() {
        assert_eq!(parse("bind x").map(|c| c.dialect()), Ok(Dialect::Classic));
        assert_eq!(
            parse("bind-with-token x").map(|c| c.dialect()),
            Ok(Dialect::Backport)
        );
    }
}
