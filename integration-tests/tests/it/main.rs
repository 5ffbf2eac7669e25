//! Herald end to end: one test binary, real NATS JetStream, real PostgreSQL, real HTTP.

mod access;
mod bad_input;
mod capture;
mod delivery;
mod faults;
mod nats_channel;
mod security;
mod shape;
mod spine;
