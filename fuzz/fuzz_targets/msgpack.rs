//! Packets of socket.io-msgpack-parser as a client may send them. `decode`
//! and `read` never panic (nor overflow the stack on deep nesting); a packet
//! `decode` accepts, written back by `encode`, decodes to the same packet.
#![no_main]

use iocluster_protocol::msgpack_parser;
use libfuzzer_sys::fuzz_target;

const MAX_ATTACHMENTS: usize = 10;

fuzz_target!(|data: &[u8]| {
    let _ = msgpack_parser::read(data, MAX_ATTACHMENTS);
    let Ok(packet) = msgpack_parser::decode(data, MAX_ATTACHMENTS) else {
        return;
    };
    assert!(packet.bin.len() <= MAX_ATTACHMENTS);
    let again = msgpack_parser::encode(packet.kind, &packet.nsp, packet.id, &packet.data, &packet.bin);
    let decoded = msgpack_parser::decode(&again, MAX_ATTACHMENTS)
        .unwrap_or_else(|error| panic!("{again:?} from {data:?} does not decode: {error}"));
    assert_eq!(decoded, packet);
});
