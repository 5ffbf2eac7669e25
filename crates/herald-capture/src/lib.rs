//! Capture: FHIR writes to change events.
