//! The collective engine of a data-parallel job: the ranks' element-wise sum of a host buffer
//! (gradients, loss sums, counts) and a barrier. A single process needs none; a job launched by
//! `mpirun` (or `srun` with PMI) uses MPI through rsmpi in a build with the `mpi` cargo feature.
//!
//! The sum is a reduction to rank 0 followed by a broadcast of its result, so every rank holds the
//! same bits (an all-reduce may associate the ranks' terms differently on each rank) and the
//! ranks' weights, updated by the same deterministic optimiser from the same gradients, stay equal.
//!
//! The engine is installed once per process by the command line ([`install`]) and read by the
//! trainers with [`current`]; it lives on the thread that started MPI (the trainers' thread), and
//! dropping the last handle after the run shuts MPI down.

use crate::backend::ops::Backend;
use crate::error::{Error, Result};
use crate::train::world::World;
use std::cell::RefCell;
use std::rc::Rc;

/// A collective engine over the ranks of a [`World`].
pub trait Collective {
    /// this process's place in the job
    fn world(&self) -> &World;
    /// the engine's name for `rlhf info` and the logs (`none`, `mpi`)
    fn name(&self) -> &'static str;
    /// `data = sum over ranks of data`, element by element; the same bits on every rank
    fn sum(&self, data: &mut [f32]) -> Result<()>;
    /// returns once every rank has called it
    fn barrier(&self) -> Result<()>;
}

/// One process: sums are the data itself.
pub struct SingleProcess {
    world: World,
}

impl SingleProcess {
    pub fn new() -> Self {
        SingleProcess { world: World::single() }
    }
}

impl Default for SingleProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl Collective for SingleProcess {
    fn world(&self) -> &World {
        &self.world
    }
    fn name(&self) -> &'static str {
        "none"
    }
    fn sum(&self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The collective for `world`: none for a single process, MPI for a launched job (in a build
/// with the `mpi` feature); an error naming the launch otherwise.
pub fn connect(world: World) -> Result<Rc<dyn Collective>> {
    if world.size == 1 {
        return Ok(Rc::new(SingleProcess { world }));
    }
    #[cfg(feature = "mpi")]
    {
        mpi_engine::MpiCollective::start(world).map(|c| Rc::new(c) as Rc<dyn Collective>)
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(Error::invalid(format!(
            "this process is rank {} of {} ({} launch), but this binary was built without a collective engine: \
             build it with `cargo build --release --features mpi` (needs Open MPI's development files, e.g. apt-get install libopenmpi-dev) \
             and launch it with `mpirun -n {}`",
            world.rank,
            world.size,
            world.launcher.name(),
            world.size
        )))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
}

/// Makes `c` this thread's collective until the returned guard is dropped.
pub fn install(c: Rc<dyn Collective>) -> Installed {
    CURRENT.with(|cur| *cur.borrow_mut() = Some(c));
    Installed(())
}

/// Uninstalls the collective when dropped (the engine shuts down with its last handle).
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|cur| cur.borrow_mut().take());
    }
}

/// This thread's collective: the installed one, else a single process.
pub fn current() -> Rc<dyn Collective> {
    CURRENT.with(|cur| cur.borrow().clone()).unwrap_or_else(|| Rc::new(SingleProcess::new()))
}

/// Sums device buffers over the ranks in one message: each downloaded straight into one packed
/// host buffer, summed, and its slice written back (nothing for a single process).
pub fn sum_buffers<B: Backend>(be: &B, c: &dyn Collective, bufs: &mut [&mut B::Buf]) -> Result<()> {
    if c.world().size == 1 {
        return Ok(());
    }
    let total: usize = bufs.iter().map(|b| be.len(b)).sum();
    let mut packed = Vec::new();
    packed.try_reserve_exact(total).map_err(|_| Error::invalid(format!("cannot allocate {total} values to sum over the ranks")))?;
    for b in bufs.iter() {
        packed.extend_from_slice(&be.download(b)?);
    }
    c.sum(&mut packed)?;
    let mut at = 0;
    for b in bufs.iter_mut() {
        let n = be.len(b);
        be.write(b, &packed[at..at + n])?;
        at += n;
    }
    Ok(())
}

/// This rank's share of `total` rows of a global batch: consecutive blocks of `ceil(total /
/// ranks)`, the last ones shorter (or empty) when `total` does not divide.
pub fn my_rows(total: usize, world: &World) -> std::ops::Range<usize> {
    let per = total.div_ceil(world.size.max(1));
    (world.rank * per).min(total)..((world.rank + 1) * per).min(total)
}

#[cfg(feature = "mpi")]
mod mpi_engine {
    use super::*;
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::topology::{Communicator, SimpleCommunicator};

    /// MPI's world communicator (rsmpi); MPI shuts down when this is dropped.
    pub struct MpiCollective {
        world: World,
        comm: SimpleCommunicator,
        _universe: mpi::environment::Universe,
    }

    impl MpiCollective {
        pub fn start(world: World) -> Result<Self> {
            let universe = mpi::initialize().ok_or_else(|| Error::invalid("MPI was already initialised in this process"))?;
            let comm = universe.world();
            let (rank, size) = (comm.rank() as usize, comm.size() as usize);
            if (rank, size) != (world.rank, world.size) {
                return Err(Error::invalid(format!(
                    "MPI sees rank {rank} of {size}, but the {} launch says rank {} of {}: the CPU and wgpu backends' collective is MPI, \
                     so launch with `mpirun -n {}` (or srun with PMI)",
                    world.launcher.name(),
                    world.rank,
                    world.size,
                    world.size
                )));
            }
            Ok(MpiCollective { world, comm, _universe: universe })
        }
    }

    impl Collective for MpiCollective {
        fn world(&self) -> &World {
            &self.world
        }
        fn name(&self) -> &'static str {
            "mpi"
        }
        fn sum(&self, data: &mut [f32]) -> Result<()> {
            let root = self.comm.process_at_rank(0);
            if self.world.rank == 0 {
                let mine = data.to_vec();
                root.reduce_into_root(&mine[..], data, SystemOperation::sum());
            } else {
                root.reduce_into(&data[..], SystemOperation::sum());
            }
            root.broadcast_into(data);
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            self.comm.barrier();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `n` ranks holding the same data: the sum multiplies by `n`.
    struct Replicated(World);

    impl Collective for Replicated {
        fn world(&self) -> &World {
            &self.0
        }
        fn name(&self) -> &'static str {
            "test"
        }
        fn sum(&self, data: &mut [f32]) -> Result<()> {
            data.iter_mut().for_each(|x| *x *= self.0.size as f32);
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sum_buffers_packs_and_unpacks_in_order() {
        let c = Replicated(World { size: 3, ..World::single() });
        let (mut a, mut b, mut e) = (vec![1.0, 2.0], vec![], vec![5.0, 6.0, 7.0]);
        sum_buffers(&crate::backend::CpuBackend::new(), &c, &mut [&mut a, &mut b, &mut e]).unwrap();
        assert_eq!((a, b, e), (vec![3.0, 6.0], vec![], vec![15.0, 18.0, 21.0]));
    }

    #[test]
    fn a_single_process_needs_no_engine_and_a_job_names_its_launch() {
        assert_eq!(connect(World::single()).unwrap().name(), "none");
        assert_eq!(current().world().size, 1);
        let job = World { rank: 1, size: 2, launcher: crate::train::world::Launcher::Torchrun, ..World::single() };
        if cfg!(not(feature = "mpi")) {
            let e = connect(job).err().expect("no engine without the mpi feature").to_string();
            assert!(e.contains("rank 1 of 2 (torchrun launch)") && e.contains("--features mpi"), "{e}");
        }
    }

    #[test]
    fn rows_split_the_global_batch_in_rank_order() {
        let w = |rank, size| World { rank, size, ..World::single() };
        assert_eq!(my_rows(8, &w(0, 1)), 0..8);
        assert_eq!((0..2).map(|r| my_rows(8, &w(r, 2))).collect::<Vec<_>>(), [0..4, 4..8]);
        assert_eq!((0..3).map(|r| my_rows(7, &w(r, 3))).collect::<Vec<_>>(), [0..3, 3..6, 6..7]);
        assert_eq!((0..4).map(|r| my_rows(2, &w(r, 4))).collect::<Vec<_>>(), [0..1, 1..2, 2..2, 2..2]);
    }

    #[test]
    fn install_scopes_the_engine_to_its_guard() {
        {
            let _g = install(Rc::new(Replicated(World { size: 4, ..World::single() })));
            assert_eq!(current().world().size, 4);
        }
        assert_eq!(current().world().size, 1);
    }
}
