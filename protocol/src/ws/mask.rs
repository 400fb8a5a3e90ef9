//! Owns payload masking (RFC 6455 §5.3): XOR with a 4-byte key, a machine word at a time.

/// XOR `buf` with the masking key `mask`, where `buf[0]` is payload byte number `phase` (only `phase % 4`
/// matters). Masking is its own inverse, so this both masks and unmasks.
///
/// The bulk is processed as aligned `u64` words (which the compiler vectorises); only the unaligned head and
/// tail (< 8 bytes each) go byte by byte. Payloads under 64 bytes skip the alignment step and use unaligned
/// 8-byte words.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    let key = rotate_key(mask, phase);
    if buf.len() < 64 {
        // Short payloads: unaligned 8-byte words (free on the targets we run on), then the tail.
        xor_words(buf, key);
        return;
    }
    // Peel off an unaligned head so the bulk is made of 8-byte-aligned words (all safe code: `align_offset`
    // and `as_chunks_mut` only compute split points).
    let head_len = buf.as_ptr().align_offset(8).min(buf.len());
    let (head, rest) = buf.split_at_mut(head_len);
    xor_bytes(head, key);
    xor_words(rest, rotate_key(key, head_len));
}

/// XOR whole 8-byte words, then the (< 8 byte) tail; `buf[0]` is at key phase 0.
#[inline(always)]
fn xor_words(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words.iter_mut() {
        *w = (u64::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    // The words cover a multiple of 8 bytes, so the tail also starts at key phase 0.
    xor_bytes(tail, key);
}

/// The key as seen from payload offset `phase`.
#[inline]
fn rotate_key(mask: [u8; 4], phase: usize) -> [u8; 4] {
    let mut k = u32::from_ne_bytes(mask);
    // Rotating in memory order: the byte at index `phase % 4` must come first.
    let shift = ((phase % 4) * 8) as u32;
    k = if cfg!(target_endian = "little") {
        k.rotate_right(shift)
    } else {
        k.rotate_left(shift)
    };
    k.to_ne_bytes()
}

#[inline(always)]
fn xor_bytes(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(buf: &mut [u8], mask: [u8; 4], phase: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(i + phase) % 4];
        }
    }

    #[test]
    fn rotate_key_table() {
        let m = [1, 2, 3, 4];
        assert_eq!(rotate_key(m, 0), [1, 2, 3, 4]);
        assert_eq!(rotate_key(m, 1), [2, 3, 4, 1]);
        assert_eq!(rotate_key(m, 2), [3, 4, 1, 2]);
        assert_eq!(rotate_key(m, 3), [4, 1, 2, 3]);
        assert_eq!(rotate_key(m, 7), [4, 1, 2, 3]);
    }

    #[test]
    fn matches_reference_at_every_offset_and_phase() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let base: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for offset in 0..16 {
            for phase in 0..8 {
                for len in [0, 1, 3, 7, 8, 15, 16, 17, 31, 63, 64, 65, 100, 255, 283] {
                    let mut a = base.clone();
                    let mut b = base.clone();
                    apply_mask(&mut a[offset..offset + len], mask, phase);
                    reference(&mut b[offset..offset + len], mask, phase);
                    assert_eq!(a, b, "offset {offset} phase {phase} len {len}");
                }
            }
        }
    }

    #[test]
    fn split_application_equals_whole() {
        let mask = [9, 8, 7, 6];
        let orig: Vec<u8> = (0..200u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..orig.len() {
            let mut parts = orig.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            assert_eq!(parts, whole, "cut {cut}");
        }
    }
}
