//! Reserved identifiers shared by several messages (buffers, tables, groups, meters, queues).

/// `buffer_id` meaning "the packet is not buffered; the data is in the message".
pub const OFP_NO_BUFFER: u32 = 0xffff_ffff;

/// Largest `max_len` of an output-to-controller action that requests a byte count.
pub const OFPCML_MAX: u16 = 0xffe5;
/// `max_len`/`miss_send_len` meaning "send the whole packet, do not buffer".
pub const OFPCML_NO_BUFFER: u16 = 0xffff;

/// Last usable table number.
pub const OFPTT_MAX: u8 = 0xfe;
/// Wildcard table (flow stats, flow deletes, table mod).
pub const OFPTT_ALL: u8 = 0xff;

/// Last usable group number.
pub const OFPG_MAX: u32 = 0xffff_ff00;
/// All groups (group delete, group stats).
pub const OFPG_ALL: u32 = 0xffff_fffc;
/// Wildcard group (flow mod deletes, flow stats).
pub const OFPG_ANY: u32 = 0xffff_ffff;

/// Last usable meter number.
pub const OFPM_MAX: u32 = 0xffff_0000;
pub const OFPM_SLOWPATH: u32 = 0xffff_fffd;
pub const OFPM_CONTROLLER: u32 = 0xffff_fffe;
pub const OFPM_ALL: u32 = 0xffff_ffff;

/// All queues of a port.
pub const OFPQ_ALL: u32 = 0xffff_ffff;

/// Priority used when a flow mod does not care.
pub const OFP_DEFAULT_PRIORITY: u16 = 0x8000;
/// Idle/hard timeout meaning "never expire".
pub const OFP_FLOW_PERMANENT: u16 = 0;
