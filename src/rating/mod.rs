//! Ratings of models from head-to-head outcomes (`rlhf elo`): the outcomes read from comparison
//! files ([`outcomes`]), Bradley-Terry maximum likelihood on the Elo scale with bootstrap
//! confidence intervals ([`bradley_terry`]), and the plot ([`svg`]).

pub mod bradley_terry;
pub mod outcomes;
pub mod svg;
