//! Postcard encoding of frames, and the length-prefixed framing for byte streams
//! (PROTOCOL.md § Framing). `decode_stream_frame` follows the check-then-parse shape: it
//! returns `Ok(None)` while the buffer holds no complete frame.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is longer than the limit for its direction.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced or actual length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Postcard could not decode the bytes into a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decoded but bytes were left over.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    /// A stream length prefix is not a valid varint.
    #[error("malformed length prefix")]
    BadLength,
}

/// Encodes a frame into its postcard bytes.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    // Serializing our own frame types into a Vec cannot fail: no maps, no unsized sequences.
    // Measured first, so the bytes are written into one allocation of the right size rather
    // than a vector that grows from 8 bytes by doubling (3 to 8 reallocations per frame).
    let len = postcard::serialize_with_flavor(frame, postcard::ser_flavors::Size::default()).unwrap_or(0);
    postcard::to_extend(frame, Vec::with_capacity(len)).unwrap_or_default()
}

/// Encodes a frame once into shared bytes (for fan-out to many recipients).
pub fn encode_bytes<T: Serialize>(frame: &T) -> Bytes {
    Bytes::from(encode(frame))
}

/// Decodes exactly one frame of at most `max` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { len: bytes.len(), max });
    }
    let (frame, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(frame)
}

/// Prefixes a frame's bytes with its length as a varint, for byte streams.
pub fn encode_stream_frame(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 5);
    put_stream_frame(&mut out, frame);
    out
}

/// Appends a frame with its length prefix to `out` (stream framing without a copy per frame).
pub fn put_stream_frame(out: &mut Vec<u8>, frame: &[u8]) {
    let mut n = frame.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(frame);
}

/// Writes what `unsent` holds to a byte stream, taking out each part as the stream takes it.
/// Each write is cancel-safe: a caller that stops waiting (a deadline) leaves the rest for its
/// next call, and no byte goes out twice.
pub async fn write_unsent<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    unsent: &mut Vec<u8>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    /// What was written goes out of the buffer once, when the call ends however it ends (its
    /// future dropped included): a stream that takes a few bytes at a time costs no copy of
    /// the rest per write.
    struct Written<'a> {
        buf: &'a mut Vec<u8>,
        len: usize,
    }
    impl Drop for Written<'_> {
        fn drop(&mut self) {
            self.buf.drain(..self.len);
        }
    }
    let mut written = Written { buf: unsent, len: 0 };
    while written.len < written.buf.len() {
        match stream.write(&written.buf[written.len..]).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => written.len += n,
        }
    }
    Ok(())
}

/// Finds the first complete length-prefixed frame in `buf`: `Ok(Some((consumed, frame)))`,
/// `Ok(None)` when more bytes are needed, an error when the prefix is invalid or over `max`.
pub fn decode_stream_frame(buf: &[u8], max: usize) -> Result<Option<(usize, &[u8])>, DecodeError> {
    let mut len: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(5) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| DecodeError::BadLength)?;
            if len > max {
                return Err(DecodeError::TooLarge { len, max });
            }
            let start = i + 1;
            return Ok(buf.get(start..start + len).map(|frame| (start + len, frame)));
        }
    }
    if buf.len() >= 5 { Err(DecodeError::BadLength) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ClientFrame, MAX_CLIENT_FRAME, Ping, ServerFrame};
    use proptest::prelude::*;

    #[tokio::test]
    async fn a_write_given_up_part_way_goes_on_where_it_stopped() {
        use futures_util::FutureExt;
        use tokio::io::AsyncReadExt;
        let (mut near, mut far) = tokio::io::duplex(8);
        let mut unsent: Vec<u8> = (0..20).collect();
        // The reader is away: 8 bytes go, then the write waits and is given up.
        assert!(write_unsent(&mut near, &mut unsent).now_or_never().is_none());
        assert_eq!(unsent.len(), 12, "what went out is taken out");
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 20];
            far.read_exact(&mut got).await.unwrap();
            got
        });
        write_unsent(&mut near, &mut unsent).await.unwrap();
        assert!(unsent.is_empty());
        assert_eq!(reader.await.unwrap(), (0..20).collect::<Vec<u8>>(), "each byte once, in order");
    }

    #[test]
    fn stream_framing_round_trips_and_waits_for_more() {
        let frame = encode(&ClientFrame::Ping(Ping { nonce: 300 }));
        let framed = encode_stream_frame(&frame);
        assert_eq!(framed[0] as usize, frame.len());
        for cut in 0..framed.len() {
            assert_eq!(decode_stream_frame(&framed[..cut], MAX_CLIENT_FRAME), Ok(None));
        }
        let (used, got) = decode_stream_frame(&framed, MAX_CLIENT_FRAME).unwrap().unwrap();
        assert_eq!((used, got), (framed.len(), frame.as_slice()));
    }

    #[test]
    fn stream_prefix_over_limit_or_invalid_is_an_error() {
        let big = encode_stream_frame(&[0u8; 200]);
        assert_eq!(decode_stream_frame(&big, 100), Err(DecodeError::TooLarge { len: 200, max: 100 }));
        assert_eq!(decode_stream_frame(&[0xff; 6], 100), Err(DecodeError::BadLength));
    }

    /// PROTOCOL.md § 5: "the server never exceeds" its frame limit. The largest frame it sends
    /// is a full `History` page of the largest events: each field at its limit.
    #[test]
    fn the_largest_history_page_fits_the_server_frame_limit() {
        use crate::wire::{
            Attachment, ChatMessage, HistoryPage, MAX_ATTACHMENTS, MAX_CONTENT_TYPE_BYTES, MAX_FILE_NAME_BYTES,
            MAX_HISTORY_PAGE, MAX_ROOM_NAME_BYTES, MAX_SERVER_FRAME, MAX_TEXT_BYTES, MAX_USERNAME_BYTES, MessageKind,
            UserRef,
        };
        let room = "r".repeat(MAX_ROOM_NAME_BYTES);
        let attachment = Attachment {
            id: u64::MAX,
            name: "n".repeat(MAX_FILE_NAME_BYTES),
            content_type: "t".repeat(MAX_CONTENT_TYPE_BYTES),
            size: u64::MAX,
        };
        let message = ChatMessage {
            room: room.clone(),
            seq: u64::MAX,
            message_id: u64::MAX,
            sender: UserRef { id: u64::MAX, username: "u".repeat(MAX_USERNAME_BYTES) },
            client_msg_id: [0xff; 16],
            sent_at_ms: u64::MAX,
            text: "x".repeat(MAX_TEXT_BYTES),
            kind: MessageKind::Post,
            target_seq: Some(u64::MAX),
            edited_at_ms: Some(u64::MAX),
            deleted: false,
            attachments: vec![attachment; MAX_ATTACHMENTS],
        };
        let page = ServerFrame::History(HistoryPage {
            request_id: u32::MAX,
            room,
            messages: vec![message; usize::from(MAX_HISTORY_PAGE)],
            next_before: Some(u64::MAX),
        });
        let len = encode(&page).len();
        assert!(len <= MAX_SERVER_FRAME, "{len} bytes");
        assert!(len > MAX_SERVER_FRAME / 2, "{len} bytes: the page is as large as it gets");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&ClientFrame::Ping(Ping { nonce: 1 }));
        bytes.push(0);
        assert_eq!(decode::<ClientFrame>(&bytes, MAX_CLIENT_FRAME), Err(DecodeError::Trailing(1)));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientFrame>(&bytes, MAX_CLIENT_FRAME);
            let _ = decode::<ServerFrame>(&bytes, usize::MAX);
            let _ = decode_stream_frame(&bytes, MAX_CLIENT_FRAME);
        }

        #[test]
        fn client_frames_round_trip(nonce in any::<u64>(), room in "\\PC{0,64}", text in "\\PC{0,200}",
                                    id in any::<[u8; 16]>(), after in any::<Option<u64>>()) {
            for frame in [
                ClientFrame::Ping(Ping { nonce }),
                ClientFrame::Join(crate::wire::Join { room: room.clone(), after_seq: after }),
                ClientFrame::Send(crate::wire::Send {
                    room: room.clone(), client_msg_id: id, text: text.clone(), attachments: vec![nonce, 1],
                }),
                ClientFrame::Edit(crate::wire::Edit {
                    room: room.clone(), client_msg_id: id, target_seq: nonce, text: text.clone(),
                }),
            ] {
                prop_assert_eq!(decode::<ClientFrame>(&encode(&frame), usize::MAX).unwrap(), frame);
            }
        }
    }
}
