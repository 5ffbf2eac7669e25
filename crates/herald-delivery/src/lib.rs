//! Notification delivery channels.
