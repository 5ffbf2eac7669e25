//! Change event bus: embedded and NATS JetStream.
