//! The MessagePack envelopes read from Redis (events, commands, replies,
//! relay envelopes between io-nodes):
//! decoding never panics, and what decodes survives encode → decode. A
//! pub/sub message of several commands decodes to what each decodes to alone;
//! events decode as serde decodes them, and a queue item of several events
//! re-encodes to the same events.
#![no_main]

use iocluster_protocol::envelope::relay::Relay;
use iocluster_protocol::envelope::{Command, Event, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::decode(data) {
        assert_eq!(Event::decode(&event.encode()).ok().as_ref(), Some(&event));
        // The field-by-field reader never accepts what serde would not, nor
        // reads it differently.
        assert_eq!(Event::decode_with_serde(data).ok().as_ref(), Some(&event));
    }
    if let Ok(events) = Event::decode_all(data) {
        let item: Vec<u8> = events.iter().flat_map(Event::encode).collect();
        assert_eq!(Event::decode_all(&item).ok().as_ref(), Some(&events));
    }
    if let Ok(command) = Command::decode(data) {
        assert_eq!(Command::decode(&command.encode()).ok().as_ref(), Some(&command));
    }
    let all: Vec<_> = Command::decode_all(data).collect();
    if let Some(Ok(first)) = all.first() {
        assert_eq!(Command::decode(&first.encode()).ok().as_ref(), Some(first));
    }
    if let Ok(reply) = Reply::decode(data) {
        assert_eq!(Reply::decode(&reply.encode()).ok().as_ref(), Some(&reply));
    }
    if let Ok(relay) = Relay::decode(data) {
        assert_eq!(Relay::decode(&relay.encode()).ok().as_ref(), Some(&relay));
    }
});
