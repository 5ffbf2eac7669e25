//! Herald end to end: one test binary, real NATS JetStream, real PostgreSQL, real HTTP.

mod access;
mod capture;
mod delivery;
mod faults;
mod security;
mod spine;
