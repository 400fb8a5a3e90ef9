//! Fuzz target: the RFC 6455 frame decoder in both roles must give the same messages and the same error whether
//! the input arrives in one piece or split at arbitrary positions derived from the data, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::ws::{Client, Decoder, DecoderConfig, Message, ProtocolError, Role, Server};

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn own(m: Message<'_>) -> Owned {
    match m {
        Message::Text(s) => Owned::Text(s.to_owned()),
        Message::Binary(b) => Owned::Binary(b.to_vec()),
        Message::Ping(b) => {
            assert!(b.len() <= 125);
            Owned::Ping(b.to_vec())
        }
        Message::Pong(b) => {
            assert!(b.len() <= 125);
            Owned::Pong(b.to_vec())
        }
        Message::Close(c) => Owned::Close(c.map(|c| {
            assert!(c.code.is_sendable());
            (c.code.0, c.reason.to_owned())
        })),
    }
}

fn run<R: Role>(
    cfg: DecoderConfig,
    wire: &[u8],
    cuts: &[usize],
) -> (Vec<Owned>, Option<ProtocolError>) {
    let mut dec = Decoder::<R>::new(cfg);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
        let mut buf = wire[start..end].to_vec();
        start = end;
        let mut pos = 0;
        loop {
            match dec.decode(&mut buf[pos..]) {
                Ok((n, Some(m))) => {
                    pos += n;
                    let m = own(m);
                    let data_len = match &m {
                        Owned::Text(s) => s.len(),
                        Owned::Binary(b) => b.len(),
                        _ => 0,
                    };
                    assert!(data_len <= cfg.max_message_size);
                    out.push(m);
                }
                Ok((n, None)) => {
                    assert!(pos <= buf.len());
                    assert_eq!(pos + n, buf.len(), "None must consume all input");
                    break;
                }
                Err(e) => {
                    assert_eq!(
                        dec.decode(&mut [0u8; 4]),
                        Err(e),
                        "decoder must stay poisoned"
                    );
                    assert!(dec.is_idle());
                    return (out, Some(e));
                }
            }
        }
    }
    assert_eq!(dec.is_idle(), dec.buffered_bytes() == 0);
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let [sel, seed_hi, seed_lo, wire @ ..] = data else {
        return;
    };
    let cfg = if sel & 1 == 0 {
        DecoderConfig::default()
    } else {
        DecoderConfig {
            max_message_size: usize::from(sel >> 1) * 4,
            max_frame_size: usize::from(sel >> 2) * 3,
        }
    };
    // Split points from a small LCG seeded by the data; chunk sizes 1..=max_chunk.
    let mut state = u32::from(u16::from_be_bytes([*seed_hi, *seed_lo])) | 1;
    let max_chunk = usize::from(seed_lo % 17) + 1;
    let mut cuts = Vec::new();
    let mut at = 0usize;
    loop {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        at += (state >> 16) as usize % max_chunk + 1;
        if at >= wire.len() {
            break;
        }
        cuts.push(at);
    }
    let whole = run::<Server>(cfg, wire, &[]);
    assert_eq!(
        run::<Server>(cfg, wire, &cuts),
        whole,
        "server role: split vs whole"
    );
    let bytewise: Vec<usize> = (1..wire.len()).collect();
    assert_eq!(
        run::<Server>(cfg, wire, &bytewise),
        whole,
        "server role: byte by byte"
    );
    let whole = run::<Client>(cfg, wire, &[]);
    assert_eq!(
        run::<Client>(cfg, wire, &cuts),
        whole,
        "client role: split vs whole"
    );
});
