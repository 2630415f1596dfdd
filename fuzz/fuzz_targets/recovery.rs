//! What a reconnecting client puts in its CONNECT `auth` for connection
//! state recovery, and the ids and offsets it sends back. `split_auth`,
//! `sid_of_pid`, `Offset::parse` and `with_offset` never panic; an auth
//! that names a pid loses `pid` and `offset` and keeps every other field;
//! a pid is accepted only under the key that made it; an offset that parses
//! prints back as it was read; `with_offset` of a JSON array is a JSON
//! array one longer, ending with the offset.
#![no_main]

use iocluster_protocol::recovery::{self, Offset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (resume, rest) = recovery::split_auth(text);
    if let Some(resume) = &resume {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).expect("an auth with a pid is a JSON object");
        let left: serde_json::Map<String, serde_json::Value> = if rest.is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&rest).expect("what is left is a JSON object")
        };
        assert!(!left.contains_key("pid") && !left.contains_key("offset"));
        assert_eq!(left.len() + 1 + usize::from(fields.contains_key("offset")), fields.len());
        let _ = recovery::sid_of_pid("key", &resume.pid);
        if let Some(sid) = recovery::sid_of_pid("key", &resume.pid) {
            assert_eq!(recovery::pid("key", sid), resume.pid);
            assert_eq!(recovery::sid_of_pid("other key", &resume.pid), None);
        }
    }
    if let Some(offset) = Offset::parse(text)
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && !text.starts_with("0") && !text.contains("-0")
    {
        assert_eq!(offset.to_string(), text);
    }
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(text) {
        let with = recovery::with_offset(text, "1-0");
        let Ok(serde_json::Value::Array(more)) = serde_json::from_str::<serde_json::Value>(&with) else {
            panic!("{with:?} from {text:?} is not an array");
        };
        assert_eq!(more.len(), items.len() + 1);
        assert_eq!(more.last(), Some(&serde_json::Value::String("1-0".into())));
    }
});
