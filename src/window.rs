//! The sliding window the percentiles (p50, p95, p99) are computed over.
//!
//! ```
//! use std::time::Duration;
//! use authwatch::window::WindowConfig;
//!
//! let watch = authwatch::AuthWatch::builder()
//!     .window(WindowConfig::new(Duration::from_secs(60), 6)?)
//!     .build()?;
//! assert_eq!(watch.window(), Duration::from_secs(60));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use authwatch_hdr::{ConfigError, WindowConfig};
