//! Training commands.
