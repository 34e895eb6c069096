//! The scripted-fault upstream server (`baton mock-provider`).
