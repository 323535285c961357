//! OpenFlow 1.3 (wire version 0x04) codec: owned message types, decode that never panics, and
//! encode that reproduces decoded bytes exactly.
//!
//! Design rules:
//! * Every read goes through a bounds-checked cursor (`reader.rs`); malformed input yields an
//!   [`OfpError`], never a panic. Nested TLV lengths are checked before use (minimum, alignment,
//!   container bounds), so a zero or oversized length can neither loop nor overflow.
//! * A typed value is produced only when its canonical encoding equals the input. Anything else
//!   (non-zero padding, over-long TLVs, types we do not model) is kept raw at the smallest
//!   enclosing level that has a raw form: [`Oxm::Other`], [`Action::Unknown`],
//!   [`Instruction::Unknown`], [`HelloElement::Unknown`], `MultipartRequestBody::Unknown` /
//!   [`MultipartReplyBody::Unknown`], [`Body::Unknown`]. Hence `decode` then `encode` returns the
//!   original bytes for every message that decodes.
//! * Encoders compute every length field and write padding as zeros; callers never set either.
//!
//! Everything is re-exported flat: `ofp::Message`, `ofp::Oxm`, `ofp::OFPP_FLOOD`, ...

mod action;
mod config;
mod consts;
mod error;
mod flow;
mod flow_match;
mod group;
mod header;
mod hello;
mod instruction;
mod message;
mod meter;
mod multipart;
mod oxm;
mod packet;
mod port;
mod reader;
mod stats;
mod writer;

pub use action::*;
pub use config::*;
pub use consts::*;
pub use error::*;
pub use flow::*;
pub use flow_match::*;
pub use group::*;
pub use header::*;
pub use hello::*;
pub use instruction::*;
pub use message::*;
pub use meter::*;
pub use multipart::*;
pub use oxm::*;
pub use packet::*;
pub use port::*;
pub use stats::*;
