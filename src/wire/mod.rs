//! Sans-IO implementation of `protocol/PROTOCOL.md`: frames, their postcard encoding, stream
//! framing, limits and the error/close code tables. No tokio, no clock, no sockets.

mod codec;
mod codes;
mod frames;
mod limits;

pub use codec::{
    DecodeError, decode, decode_stream_frame, encode, encode_bytes, encode_stream_frame, put_stream_frame, write_unsent,
};
pub use codes::{CloseCode, ErrorCode};
pub use frames::*;
pub use limits::*;

#[cfg(test)]
mod vectors;
