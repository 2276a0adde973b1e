//! sigkill
