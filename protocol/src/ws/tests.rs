//! Property tests for the frame codec: encode → decode round trips in both roles under arbitrary fragmentation,
//! interleaved control frames and input chunking; masking involution; incremental UTF-8 verdicts.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// An owned decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        Message::Ping(b) => Owned::Ping(b.to_vec()),
        Message::Pong(b) => Owned::Pong(b.to_vec()),
        Message::Close(c) => Owned::Close(c.map(|c| (c.code.0, c.reason.to_owned()))),
    }
}

/// Decode `wire` cut at the (sorted, deduplicated) positions `cuts`, each piece in a fresh buffer.
fn decode_chunked<R: Role>(wire: &[u8], cuts: &[usize]) -> (Vec<Owned>, Option<ProtocolError>) {
    decode_chunked_idle::<R>(wire, cuts).0
}

/// As [`decode_chunked`], also reporting whether the decoder ended idle with nothing on the heap.
fn decode_chunked_idle<R: Role>(
    wire: &[u8],
    cuts: &[usize],
) -> ((Vec<Owned>, Option<ProtocolError>), bool) {
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(wire.len())).collect();
    bounds.push(0);
    bounds.push(wire.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut dec = Decoder::<R>::new(DecoderConfig::default());
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let mut buf = wire[w[0]..w[1]].to_vec();
        let mut pos = 0;
        loop {
            match dec.decode(&mut buf[pos..]) {
                Ok((n, Some(m))) => {
                    pos += n;
                    out.push(own(m));
                }
                Ok((n, None)) => {
                    assert_eq!(pos + n, buf.len());
                    break;
                }
                Err(e) => return ((out, Some(e)), dec.is_idle()),
            }
        }
    }
    let idle = dec.is_idle();
    assert_eq!(idle, dec.buffered_bytes() == 0);
    ((out, None), idle)
}

/// One data message: text flag, payload bytes, fragment cut points, control frames to put after fragments.
type DataSpec = (bool, Vec<u8>, Vec<Index>, Vec<Option<(bool, Vec<u8>)>>);

fn data_spec() -> impl Strategy<Value = DataSpec> {
    let payload = prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        "[a-zé€😀]{0,200}".prop_map(|s| (true, s.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|v| (false, v)),
        prop::collection::vec(any::<u8>(), 0..70_000).prop_map(|v| (false, v)),
    ];
    let control = prop::option::weighted(
        0.4,
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..=125)),
    );
    (
        payload,
        prop::collection::vec(any::<Index>(), 0..4),
        prop::collection::vec(control, 0..4),
    )
        .prop_map(|((text, p), cuts, ctrls)| (text, p, cuts, ctrls))
}

/// Build the wire bytes (through `enc`) and the expected decoded sequence.
fn build(
    specs: &[DataSpec],
    close: &Option<(u16, String)>,
    mut enc: impl FnMut(&mut Vec<u8>, bool, OpCode, &[u8]),
) -> (Vec<u8>, Vec<Owned>) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for (text, payload, cuts, ctrls) in specs {
        let mut bounds: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
        bounds.push(0);
        bounds.push(payload.len());
        bounds.sort_unstable();
        bounds.dedup();
        if bounds.len() == 1 {
            bounds.push(0); // empty payload: one empty frame
        }
        let frames = bounds.len() - 1;
        for (k, w) in bounds.windows(2).enumerate() {
            let op = match (k, text) {
                (0, true) => OpCode::Text,
                (0, false) => OpCode::Binary,
                _ => OpCode::Continuation,
            };
            let last = k + 1 == frames;
            enc(&mut wire, last, op, &payload[w[0]..w[1]]);
            if !last && let Some(Some((ping, cp))) = ctrls.get(k) {
                let op = if *ping { OpCode::Ping } else { OpCode::Pong };
                enc(&mut wire, true, op, cp);
                want.push(if *ping {
                    Owned::Ping(cp.clone())
                } else {
                    Owned::Pong(cp.clone())
                });
            }
        }
        want.push(if *text {
            Owned::Text(String::from_utf8(payload.clone()).unwrap())
        } else {
            Owned::Binary(payload.clone())
        });
    }
    if let Some((code, reason)) = close {
        let mut p = [0u8; 125];
        let n = encode_close_payload(CloseCode(*code), reason, &mut p);
        enc(&mut wire, true, OpCode::Close, &p[..n]);
        want.push(Owned::Close(Some((*code, reason.clone()))));
    }
    (wire, want)
}

fn close_spec() -> impl Strategy<Value = Option<(u16, String)>> {
    prop::option::of((
        prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
        "[a-z é€]{0,30}",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn server_decodes_client_frames_under_any_chunking(
        specs in prop::collection::vec(data_spec(), 0..5),
        close in close_spec(),
        seed in any::<u32>(),
        chunk_cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut state = seed;
        let mut keys = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state.to_le_bytes()
        };
        let (wire, want) = build(&specs, &close, |w, fin, op, p| encode_client_frame(w, fin, op, p, &mut keys));
        let (whole, idle) = decode_chunked_idle::<Server>(&wire, &[]);
        prop_assert_eq!(&whole, &(want, None));
        prop_assert!(idle, "complete frames must leave the decoder idle");
        let cuts: Vec<usize> = chunk_cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        let (split, idle) = decode_chunked_idle::<Server>(&wire, &cuts);
        prop_assert_eq!(split, whole);
        prop_assert!(idle);
    }

    #[test]
    fn client_decodes_server_frames_under_any_chunking(
        specs in prop::collection::vec(data_spec(), 0..5),
        close in close_spec(),
        chunk_cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (wire, want) = build(&specs, &close, encode_server_frame);
        let (whole, idle) = decode_chunked_idle::<Client>(&wire, &[]);
        prop_assert_eq!(&whole, &(want, None));
        prop_assert!(idle, "complete frames must leave the decoder idle");
        let cuts: Vec<usize> = chunk_cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        let (split, idle) = decode_chunked_idle::<Client>(&wire, &cuts);
        prop_assert_eq!(split, whole);
        prop_assert!(idle);
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_under_any_chunking(
        wire in prop::collection::vec(any::<u8>(), 0..200),
        chunk_cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let cuts: Vec<usize> = chunk_cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        prop_assert_eq!(decode_chunked::<Server>(&wire, &cuts), decode_chunked::<Server>(&wire, &[]));
        prop_assert_eq!(decode_chunked::<Client>(&wire, &cuts), decode_chunked::<Client>(&wire, &[]));
    }

    #[test]
    fn apply_mask_twice_is_identity(
        data in prop::collection::vec(any::<u8>(), 0..600),
        offset in 0usize..16,
        key in any::<[u8; 4]>(),
        phase in 0usize..64,
    ) {
        let offset = offset.min(data.len());
        let mut buf = data.clone();
        apply_mask(&mut buf[offset..], key, phase);
        for (i, (a, b)) in buf[offset..].iter().zip(&data[offset..]).enumerate() {
            prop_assert_eq!(*a, *b ^ key[(i + phase) % 4]);
        }
        apply_mask(&mut buf[offset..], key, phase);
        prop_assert_eq!(buf, data);
    }

    #[test]
    fn incremental_utf8_agrees_with_std(
        bytes in prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..64),
            (any::<String>(), any::<Index>(), any::<u8>()).prop_map(|(s, i, b)| {
                let mut v = s.into_bytes();
                if !v.is_empty() {
                    let k = i.index(v.len());
                    v[k] = b;
                }
                v
            }),
            (any::<String>(), any::<Index>()).prop_map(|(s, i)| {
                let mut v = s.into_bytes();
                let k = i.index(v.len() + 1);
                v.truncate(k);
                v
            }),
        ],
        frag_cuts in prop::collection::vec(any::<Index>(), 0..6),
        chunk_cuts in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let mut bounds: Vec<usize> = frag_cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        bounds.push(0);
        bounds.push(bytes.len());
        bounds.sort_unstable();
        bounds.dedup();
        if bounds.len() == 1 {
            bounds.push(0);
        }
        let mut wire = Vec::new();
        let frames = bounds.len() - 1;
        for (k, w) in bounds.windows(2).enumerate() {
            let op = if k == 0 { OpCode::Text } else { OpCode::Continuation };
            encode_server_frame(&mut wire, k + 1 == frames, op, &bytes[w[0]..w[1]]);
        }
        let cuts: Vec<usize> = chunk_cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        let got = decode_chunked::<Client>(&wire, &cuts);
        let want = match std::str::from_utf8(&bytes) {
            Ok(s) => (vec![Owned::Text(s.to_owned())], None),
            Err(_) => (vec![], Some(ProtocolError::InvalidUtf8)),
        };
        prop_assert_eq!(got, want);
    }
}
