//! Fuzzes the SSE module: `parse_last_event_id` against a simple reference, and `write_event` + `write_comment`
//! against the crate's own WHATWG `EventParser` (arbitrary id/event/data, arbitrary chunking).
//!
//! Input layout: the whole input is a `Last-Event-ID` candidate. Then byte 0 is a flag byte (bit 0: id present,
//! bit 1: event present, bit 2: retry present, bit 3: a comment precedes the event, bits 4-7: feed chunk size - 1)
//! and the rest is split on 0xFF into id, event and data (lossy UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::sse::{self, Event, EventParser, SseError, SseItem};

/// Reference for `parse_last_event_id`: trim WHATWG ASCII whitespace, empty is `None`, otherwise digits only and
/// std's `u64` parser decides.
fn reference(v: &[u8]) -> Result<Option<u64>, ()> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r');
    let Some(start) = v.iter().position(|b| !is_ws(b)) else {
        return Ok(None);
    };
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(v.len(), |e| e + 1);
    let t = &v[start..end];
    if !t.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or(())
}

fn normalise(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fuzz_target!(|input: &[u8]| {
    let got = sse::parse_last_event_id(input);
    assert_eq!(
        got.map_err(|_| ()),
        reference(input),
        "Last-Event-ID {input:?}"
    );
    if let Err(e) = got {
        assert_eq!(e, SseError::InvalidLastEventId);
    }

    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let id = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let event = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let data = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let retry = (flags & 4 != 0).then(|| (rest.len() as u32).wrapping_mul(2_654_435_761));
    let ev = Event {
        id: (flags & 1 != 0).then_some(&*id),
        event: (flags & 2 != 0).then_some(&*event),
        retry,
        data: &data,
    };

    let mut stream = Vec::new();
    let mut expected_comments = Vec::new();
    if flags & 8 != 0 {
        sse::write_comment(&mut stream, &data);
        expected_comments.extend(normalise(&data).split('\n').map(str::to_owned));
    }
    let before = stream.len();
    let result = sse::write_event(&mut stream, &ev);
    let id_bad = ev.id.is_some_and(|s| s.contains(['\r', '\n', '\0']));
    let event_bad = ev.event.is_some_and(|s| s.contains(['\r', '\n']));
    assert_eq!(result.is_err(), id_bad || event_bad, "{ev:?} -> {result:?}");
    assert_eq!(
        sse::encoded_len(&ev).ok(),
        result.ok().map(|()| stream.len() - before)
    );
    if result.is_err() {
        assert_eq!(stream.len(), before, "a refused event wrote bytes");
        return;
    }

    let mut parser = EventParser::new();
    let mut items = Vec::new();
    for chunk in stream.chunks(usize::from(flags >> 4) + 1) {
        parser.feed(chunk, &mut items);
    }
    let mut comments = Vec::new();
    let mut events = Vec::new();
    for item in items {
        match item {
            SseItem::Comment(c) => comments.push(c),
            SseItem::Event(e) => events.push(e),
        }
    }
    assert_eq!(comments, expected_comments);
    assert_eq!(events.len(), 1, "{ev:?} gave {events:?}");
    let got = &events[0];
    assert_eq!(got.data, normalise(&data));
    assert_eq!(got.id.as_deref(), ev.id);
    assert_eq!(got.last_event_id, ev.id.unwrap_or(""));
    assert_eq!(got.event_type, ev.event.unwrap_or(""));
    assert_eq!(got.retry, ev.retry.map(u64::from));
    assert_eq!(parser.last_event_id(), ev.id.unwrap_or(""));
});
