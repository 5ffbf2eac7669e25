//! Matcher: consumes change events, persists notifications.
