//! Event arguments as they travel: JSON text plus binary attachments.
//!
//! A [`Payload`] is the argument list of an event or an acknowledgement. It
//! keeps the JSON text it arrived as (no re-encoding when it is passed on) and
//! the binary attachments that `{"_placeholder":true,"num":N}` objects in the
//! JSON refer to. Handlers usually take typed arguments instead: see
//! [`FromPayload`].

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// The arguments of an event or ack: JSON values and binary attachments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// JSON text of the argument array, e.g. `[1,"two"]`.
    json: String,
    attachments: Vec<Bytes>,
}

/// Why arguments could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("invalid JSON arguments: {0}")]
    Json(#[from] serde_json::Error),
    #[error("arguments must serialize to a JSON array")]
    NotAnArray,
}

impl Payload {
    /// No arguments.
    pub fn empty() -> Payload {
        Payload {
            json: "[]".to_owned(),
            attachments: Vec::new(),
        }
    }

    /// One argument.
    pub fn from_arg<T: Serialize + ?Sized>(arg: &T) -> Result<Payload, PayloadError> {
        let mut json = String::from("[");
        json.push_str(&serde_json::to_string(arg)?);
        json.push(']');
        Ok(Payload {
            json,
            attachments: Vec::new(),
        })
    }

    /// Several arguments: `args` must serialize to an array (a tuple, a `Vec`,
    /// `serde_json::json!([...])`); its elements become the arguments.
    pub fn from_args<T: Serialize + ?Sized>(args: &T) -> Result<Payload, PayloadError> {
        let json = serde_json::to_string(args)?;
        if !json.starts_with('[') {
            return Err(PayloadError::NotAnArray);
        }
        Ok(Payload {
            json,
            attachments: Vec::new(),
        })
    }

    /// Arguments with binary attachments. Refer to attachment `i` from the
    /// JSON with [`Payload::placeholder`]`(i)`.
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Payload {
        self.attachments = attachments;
        self
    }

    /// The JSON object standing for attachment `num`.
    pub fn placeholder(num: usize) -> serde_json::Value {
        serde_json::json!({ "_placeholder": true, "num": num })
    }

    /// From the JSON text of an argument array, as received.
    pub fn from_raw(json: String, attachments: Vec<Bytes>) -> Payload {
        Payload { json, attachments }
    }

    /// From an event array `["name", ...args]`: the name and the arguments.
    pub(crate) fn from_event(
        data: &str,
        attachments: Vec<Bytes>,
    ) -> Result<(String, Payload), PayloadError> {
        let items: Vec<&RawValue> = serde_json::from_str(data)?;
        let Some((name, args)) = items.split_first() else {
            return Err(PayloadError::NotAnArray);
        };
        let name: String = serde_json::from_str(name.get())?;
        Ok((
            name,
            Payload {
                json: join_raw(args),
                attachments,
            },
        ))
    }

    /// The JSON text of the argument array.
    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// The arguments as JSON values (placeholders left in place).
    pub fn values(&self) -> Result<Vec<serde_json::Value>, PayloadError> {
        Ok(serde_json::from_str(&self.json)?)
    }

    /// Argument `index` as `T`.
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, PayloadError> {
        let items: Vec<&RawValue> = serde_json::from_str(&self.json)?;
        match items.get(index) {
            Some(raw) => Ok(Some(serde_json::from_str(raw.get())?)),
            None => Ok(None),
        }
    }

    /// The event array `["event", ...args]` for an emit.
    pub(crate) fn event_json(&self, event: &str) -> Result<String, PayloadError> {
        let name = serde_json::to_string(event)?;
        let inner = self.json.trim();
        let inner = &inner[1..inner.len() - 1];
        let mut out = String::with_capacity(name.len() + inner.len() + 3);
        out.push('[');
        out.push_str(&name);
        if !inner.trim().is_empty() {
            out.push(',');
            out.push_str(inner);
        }
        out.push(']');
        Ok(out)
    }
}

fn join_raw(items: &[&RawValue]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push(']');
    out
}

/// How a handler receives an event's arguments.
///
/// [`Payload`] takes them as they are. Any other `T: Deserialize` is read from
/// the arguments as follows: with exactly one argument, from that argument
/// (the common case: `socket.emit("chat", {text})`); otherwise, or if that
/// fails, from the whole argument array (use a tuple for several arguments).
pub trait FromPayload: Sized {
    fn from_payload(payload: Payload) -> Result<Self, PayloadError>;
}

impl FromPayload for Payload {
    fn from_payload(payload: Payload) -> Result<Self, PayloadError> {
        Ok(payload)
    }
}

impl<T: DeserializeOwned> FromPayload for T {
    fn from_payload(payload: Payload) -> Result<Self, PayloadError> {
        let items: Vec<&RawValue> = serde_json::from_str(&payload.json)?;
        if let [single] = items.as_slice()
            && let Ok(value) = serde_json::from_str(single.get())
        {
            return Ok(value);
        }
        Ok(serde_json::from_str(&payload.json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_arrays_split_and_join() {
        let (name, payload) = Payload::from_event(r#"["chat",{"a":1}, 2]"#, Vec::new()).unwrap();
        assert_eq!(name, "chat");
        assert_eq!(payload.json(), r#"[{"a":1},2]"#);
        assert_eq!(payload.event_json("back").unwrap(), r#"["back",{"a":1},2]"#);
        assert_eq!(Payload::empty().event_json("x").unwrap(), r#"["x"]"#);
        assert_eq!(
            Payload::from_arg("hi").unwrap().event_json("x").unwrap(),
            r#"["x","hi"]"#
        );
        assert!(Payload::from_args(&1).is_err());
    }

    #[test]
    fn typed_arguments() {
        let one = Payload::from_raw(r#"[{"text":"hi"}]"#.into(), Vec::new());
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Msg {
            text: String,
        }
        assert_eq!(
            Msg::from_payload(one.clone()).unwrap(),
            Msg { text: "hi".into() }
        );
        let two = Payload::from_raw(r#"["a",2]"#.into(), Vec::new());
        assert_eq!(<(String, u32)>::from_payload(two).unwrap(), ("a".into(), 2));
        let values = <Vec<serde_json::Value>>::from_payload(one).unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(
            Payload::from_payload(Payload::empty()).unwrap(),
            Payload::empty()
        );
    }
}
