//! The process's place in a data-parallel job, read from its launcher's environment: `mpirun`
//! (Open MPI's `OMPI_COMM_WORLD_*`, MPICH's and Intel MPI's `PMI_*`), Slurm's `srun`
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, set per task of a job step) and torchrun
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). A process none of them
//! started is rank 0 of 1. Launchers that nest (torchrun inside an allocation, `mpirun` under
//! Slurm) may all be present: they must then agree on the rank and world size, or the launch is
//! refused with both readings named.

use crate::error::{Error, Result};

/// What started the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// no launcher: a single process
    Single,
    /// `mpirun` / `mpiexec` (Open MPI, MPICH, Intel MPI)
    Mpi,
    /// Slurm's `srun`
    Slurm,
    /// torchrun (or any launcher that sets its variables)
    Torchrun,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Single => "none",
            Launcher::Mpi => "mpirun",
            Launcher::Slurm => "srun",
            Launcher::Torchrun => "torchrun",
        }
    }
}

/// Rank and world size of this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// this process's rank, `0 .. size`
    pub rank: usize,
    /// processes in the job
    pub size: usize,
    /// rank among the processes on this machine (picks the GPU)
    pub local_rank: usize,
    /// what set the variables above (the first in the order MPI, torchrun, Slurm)
    pub launcher: Launcher,
    /// torchrun's rendezvous (`MASTER_ADDR`, `MASTER_PORT`), when set
    pub rendezvous: Option<(String, u16)>,
}

impl World {
    /// A single process.
    pub fn single() -> Self {
        World { rank: 0, size: 1, local_rank: 0, launcher: Launcher::Single, rendezvous: None }
    }

    /// The world of this process, from its environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The world from the variables `var` returns (the environment's, or a test's).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut readings: Vec<World> = Vec::new();
        for (launcher, rank, size, local) in [
            (Launcher::Mpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", Some("OMPI_COMM_WORLD_LOCAL_RANK")),
            (Launcher::Mpi, "PMI_RANK", "PMI_SIZE", Some("MPI_LOCALRANKID")),
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", Some("LOCAL_RANK")),
        ] {
            if let Some(w) = reading(&var, launcher, rank, size, local)? {
                readings.push(w);
            }
        }
        // Slurm's task variables belong to a job step (srun); a batch script's own shell has
        // SLURM_PROCID 0 and SLURM_NTASKS of the whole allocation, which is not this process's world
        if var("SLURM_STEP_ID").or_else(|| var("SLURM_STEPID")).is_some_and(|s| s != "batch" && s != "extern") {
            if let Some(w) = reading(&var, Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS", Some("SLURM_LOCALID"))? {
                readings.push(w);
            }
        }
        let Some(first) = readings.first().cloned() else { return Ok(World::single()) };
        for other in &readings[1..] {
            if (other.rank, other.size) != (first.rank, first.size) {
                return Err(Error::invalid(format!(
                    "the launch environment disagrees with itself: {} says rank {} of {}, {} says rank {} of {}",
                    first.launcher.name(),
                    first.rank,
                    first.size,
                    other.launcher.name(),
                    other.rank,
                    other.size
                )));
            }
        }
        let rendezvous = match (var("MASTER_ADDR"), var("MASTER_PORT")) {
            (Some(addr), Some(port)) => {
                let port = port.trim().parse::<u16>().map_err(|_| Error::invalid(format!("MASTER_PORT={port:?} is not a port number")))?;
                Some((addr, port))
            }
            (None, None) => None,
            (Some(_), None) => return Err(Error::invalid("MASTER_ADDR is set but MASTER_PORT is not")),
            (None, Some(_)) => return Err(Error::invalid("MASTER_PORT is set but MASTER_ADDR is not")),
        };
        Ok(World { rendezvous, ..first })
    }

    /// Whether this process writes the run's files and prints its progress.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
}

/// One launcher's reading of the rank variables: `None` when it set neither; an error naming the
/// variable when it set one without the other, or a value that is no count or out of range.
fn reading(var: &impl Fn(&str) -> Option<String>, launcher: Launcher, rank: &str, size: &str, local: Option<&str>) -> Result<Option<World>> {
    let parse = |name: &str, v: String| v.trim().parse::<usize>().map_err(|_| Error::invalid(format!("{name}={v:?} is not a non-negative integer")));
    let (r, s) = match (var(rank), var(size)) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(Error::invalid(format!("{rank} is set but {size} is not ({} launch)", launcher.name()))),
        (None, Some(_)) => return Err(Error::invalid(format!("{size} is set but {rank} is not ({} launch)", launcher.name()))),
        (Some(r), Some(s)) => (parse(rank, r)?, parse(size, s)?),
    };
    if s == 0 || r >= s {
        return Err(Error::invalid(format!("{rank}={r} is not a rank of {size}={s}")));
    }
    let local_rank = match local.and_then(var) {
        Some(v) => parse(local.unwrap_or_default(), v)?,
        None => 0,
    };
    Ok(Some(World { rank: r, size: s, local_rank, launcher, rendezvous: None }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(vars: &[(&str, &str)]) -> Result<World> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        World::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(world(&[]).unwrap(), World::single());
        // a Slurm batch script's shell: no job step, not a world of 4
        assert_eq!(world(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")]).unwrap(), World::single());
    }

    #[test]
    fn each_launcher_is_read() {
        let w = world(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")]).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.launcher), (1, 2, 1, Launcher::Mpi));
        let w = world(&[("PMI_RANK", "3"), ("PMI_SIZE", "8")]).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.launcher), (3, 8, 0, Launcher::Mpi));
        let w = world(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1"), ("SLURM_STEP_ID", "0")]).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.launcher), (5, 16, 1, Launcher::Slurm));
        let w = world(&[("RANK", "2"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")]).unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.launcher), (2, 4, 0, Launcher::Torchrun));
        assert_eq!(w.rendezvous, Some(("10.0.0.1".to_string(), 29500)));
        assert!(!w.is_main());
    }

    #[test]
    fn nested_launchers_must_agree() {
        let both = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2"), ("SLURM_STEP_ID", "3")];
        assert_eq!(world(&both).unwrap().launcher, Launcher::Mpi);
        let e = world(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("RANK", "0"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("mpirun says rank 1 of 2") && e.contains("torchrun says rank 0 of 2"), "{e}");
    }

    #[test]
    fn bad_variables_are_named() {
        for (vars, needle) in [
            (vec![("RANK", "0")], "RANK is set but WORLD_SIZE is not"),
            (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (vec![("RANK", "2"), ("WORLD_SIZE", "2")], "RANK=2 is not a rank of WORLD_SIZE=2"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "0")], "not a rank"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")], "MASTER_PORT is not"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")], "MASTER_PORT=\"99999\""),
        ] {
            let e = world(&vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{vars:?}: {e}");
        }
    }
}
