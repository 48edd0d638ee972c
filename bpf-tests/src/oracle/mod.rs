//! Independent oracle. Placeholder.
pub mod testing;
/// x
pub struct Oracle;
/// x
pub struct Snapshot;
/// x
pub struct Leftover;
/// x
pub struct LeftoverKind;
