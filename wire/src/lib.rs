//! Wire formats shared by the Cloud Rack switch and controller.
//!
//! Every module follows the same contract (after smoltcp's `wire`): a typed view over a byte
//! buffer whose `new_checked` validates lengths so that accessors never panic afterwards, and a
//! `Repr` (or owned message type) with symmetric `parse`/`emit`. No I/O lives here.

pub mod gre;
pub mod mac;
pub mod ofp;
pub mod ofp_stream;
pub mod tccs;
pub mod vnet_hdr;
