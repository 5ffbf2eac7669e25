//! Herald end to end: one test binary, real NATS JetStream, real PostgreSQL, real HTTP.

mod access;
mod capture;
mod delivery;
mod explain;
mod faults;
mod nats_channel;
mod security;
mod spine;
