//! The load generator's scenarios that drive the server through `socketchat-client` (or the
//! other servers it is compared with: `peer`), as a library so that the test suite runs a
//! smoke pass of each (`tests/smoke.rs`) and checks their correctness checks (never their
//! figures).

pub mod fanout;
pub mod measure;
pub mod peer;
pub mod socketio;
