//! Herald end to end: one test binary, real NATS JetStream, real PostgreSQL, real HTTP.

mod access;
mod bad_input;
mod capture;
mod delivery;
mod explain;
mod faults;
mod filters;
mod handoff;
mod nats_channel;
mod security;
mod shape;
mod spine;
