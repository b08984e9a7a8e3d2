//! orderd
