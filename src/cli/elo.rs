//! `rlhf elo`: Elo ratings of models (or checkpoints) from head-to-head outcomes, with bootstrap
//! confidence intervals and the win-rate matrix (see [`rlhf::rating`]).

use anyhow::Result;
use clap::Args;
use rlhf::rating::bradley_terry::{bootstrap, fit, win_matrix, PRIOR_GAMES};
use rlhf::rating::outcomes::Outcomes;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EloArgs {
    /// JSONL of outcomes: {"a": NAME, "b": NAME, "winner": "a"|"b"|"tie"} lines, or rankings
    /// whose samples carry model names ({"ranked": [...], "models": [...]})
    #[arg(long)]
    pub comparisons: PathBuf,
    /// Bootstrap resamplings of the games for the 95% intervals (0: none)
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Write the ratings with their intervals as an SVG plot
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

pub fn cmd_elo(a: &EloArgs) -> Result<()> {
    let o = Outcomes::read(&a.comparisons)?;
    let n = o.names.len();
    let ratings = fit(n, &o.games, PRIOR_GAMES);
    let ci = if a.bootstrap > 0 { bootstrap(n, &o.games, PRIOR_GAMES, a.bootstrap, a.seed) } else { vec![(f64::NAN, f64::NAN); n] };
    let m = win_matrix(n, &o.games);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| ratings[j].total_cmp(&ratings[i]).then(i.cmp(&j)));
    println!(
        "rlhf elo: {n} models, {} games from {} (Bradley-Terry on the Elo scale, mean 1000; ties count half; {} bootstrap rounds)",
        o.games.len(),
        a.comparisons.display(),
        a.bootstrap
    );
    println!("| rank | model | rating | 95% interval | games | score |");
    println!("|---:|---|---:|---|---:|---:|");
    for (rank, &i) in order.iter().enumerate() {
        let games: usize = m[i].iter().map(|c| c.1).sum();
        let score: f64 = m[i].iter().map(|c| c.0 * c.1 as f64).sum::<f64>() / games.max(1) as f64;
        let interval = if ci[i].0.is_finite() { format!("{:.0} .. {:.0}", ci[i].0, ci[i].1) } else { "-".into() };
        println!("| {} | {} | {:.0} | {interval} | {games} | {:.3} |", rank + 1, o.names[i], ratings[i], score);
    }
    println!();
    println!("win rate of the row against the column (games):");
    println!("| | {} |", order.iter().map(|&j| o.names[j].as_str()).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---:|".repeat(n));
    for &i in &order {
        let cells: Vec<String> = order.iter().map(|&j| if m[i][j].1 == 0 { "-".into() } else { format!("{:.2} ({})", m[i][j].0, m[i][j].1) }).collect();
        println!("| {} | {} |", o.names[i], cells.join(" | "));
    }
    if let Some(path) = &a.svg {
        let rows: Vec<(String, f64, (f64, f64))> = order.iter().map(|&i| (o.names[i].clone(), ratings[i], ci[i])).collect();
        rlhf::io::fs::atomic_write(path, rlhf::rating::svg::ratings_svg(&rows).as_bytes())?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
