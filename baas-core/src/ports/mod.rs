//! The ports: what the core needs from the outside world, as traits.
//! Adapters implement them; the core never names an adapter.
//!
//! Storage ports are synchronous (diesel and the filesystem are); async
//! shells call services off their reactor. `PowerControl` is async because
//! its calls wait on remote machines.

pub mod agent_link;
pub mod block;
pub mod chunks;
pub mod metadata;
pub mod power;
pub mod queue;
pub mod system;

pub use agent_link::{AgentLink, MAX_CHUNKS_PER_CALL};
pub use block::BlockDevice;
pub use chunks::{ChunkStore, Put, SweepStats, Usage};
pub use metadata::{ImageFilter, MetadataStore, UploadSession};
pub use power::{PowerAction, PowerControl, PowerState};
pub use queue::{BootQueue, JobFilter};
pub use system::{Clock, Entropy};
