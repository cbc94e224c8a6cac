//! The collective engine of a data-parallel job: the ranks' element-wise sum of a host buffer
//! (gradients, loss sums, counts) and a barrier. A single process needs none; a job launched by
//! `mpirun` (or `srun` with PMI) uses MPI through rsmpi in a build with the `mpi` cargo feature.
//!
//! The sum is formed on rank 0 in rank order and sent back to every rank, so every rank holds the
//! same bits (an all-reduce may associate the ranks' terms differently on each rank) and the
//! ranks' weights, updated by the same deterministic optimiser from the same gradients, stay equal.
//! A rank that waits longer than `RLHF_COLLECTIVE_TIMEOUT` seconds for another names it and aborts
//! the job, so a dead or hung rank never leaves the others waiting forever.
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
    /// `data = root's data` on every rank (every rank passes a buffer of the same length)
    fn broadcast(&self, root: usize, data: &mut [f32]) -> Result<()>;
    /// returns once every rank has called it
    fn barrier(&self) -> Result<()>;
    /// what this rank's collectives have cost so far (nothing for a single process)
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}

/// The running cost of a rank's collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    /// seconds spent inside sums and broadcasts: the transfers, and waiting for the other ranks
    pub seconds: f64,
    /// values summed or broadcast
    pub values: u64,
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
    fn broadcast(&self, _root: usize, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The variable that sets how long a rank waits for the others in one collective, in seconds.
pub const TIMEOUT_VAR: &str = "RLHF_COLLECTIVE_TIMEOUT";

/// How long a rank waits for the others in one collective before it names the missing rank and
/// aborts the job: `RLHF_COLLECTIVE_TIMEOUT` seconds, 1800 (PyTorch's default) when unset.
pub fn timeout_from_env() -> Result<std::time::Duration> {
    timeout_from(std::env::var(TIMEOUT_VAR).ok().as_deref())
}

fn timeout_from(value: Option<&str>) -> Result<std::time::Duration> {
    let Some(v) = value else { return Ok(std::time::Duration::from_secs(1800)) };
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(Error::invalid(format!("{TIMEOUT_VAR}={v:?} is not a positive number of seconds"))),
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
        mpi_engine::MpiCollective::start(world, timeout_from_env()?).map(|c| Rc::new(c) as Rc<dyn Collective>)
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
    static ZERO_STAGE: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Makes `c` this thread's collective until the returned guard is dropped.
pub fn install(c: Rc<dyn Collective>) -> Installed {
    install_with(c, 0)
}

/// [`install`] with the ZeRO stage of the run's optimisers (`--zero`: 0 keeps the whole AdamW
/// state on every rank, 1 shards it over the ranks; see [`crate::train::zero`]).
pub fn install_with(c: Rc<dyn Collective>, zero_stage: u8) -> Installed {
    CURRENT.with(|cur| *cur.borrow_mut() = Some(c));
    ZERO_STAGE.with(|z| z.set(zero_stage));
    Installed(())
}

/// The ZeRO stage installed with this thread's collective (0 when none is).
pub fn zero_stage() -> u8 {
    ZERO_STAGE.with(|z| z.get())
}

/// Uninstalls the collective when dropped (the engine shuts down with its last handle).
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|cur| cur.borrow_mut().take());
        ZERO_STAGE.with(|z| z.set(0));
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
    use mpi::point_to_point::{Destination, Source};
    use mpi::request::{Request, Scope};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    /// MPI's world communicator (rsmpi); MPI shuts down when this is dropped.
    ///
    /// Every collective is point-to-point through rank 0 with non-blocking requests polled
    /// against a deadline: rank 0 receives the ranks' data one rank after another, adds it in
    /// rank order (the same bits whatever the arrival order) and sends the sum back to each. A
    /// rank that does not take part in time (it died, hung or stopped) is named by the rank that
    /// waited for it, and the job is aborted (`MPI_Abort` ends every process of it) instead of
    /// waiting forever.
    pub struct MpiCollective {
        world: World,
        comm: SimpleCommunicator,
        timeout: Duration,
        /// collectives started so far (the message tag and the error's reference)
        seq: Cell<u64>,
        traffic: Cell<Traffic>,
        _universe: mpi::environment::Universe,
    }

    impl MpiCollective {
        pub fn start(world: World, timeout: Duration) -> Result<Self> {
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
            Ok(MpiCollective { world, comm, timeout, seq: Cell::new(0), traffic: Cell::new(Traffic::default()), _universe: universe })
        }

        /// Starts the next collective: its message tag and deadline.
        fn next(&self) -> (i32, Instant) {
            let n = self.seq.get() + 1;
            self.seq.set(n);
            ((n % 32_768) as i32, Instant::now() + self.timeout)
        }

        /// Adds a collective of `values` values that started at `start` to the traffic.
        fn count(&self, start: Instant, values: usize) {
            let t = self.traffic.get();
            self.traffic.set(Traffic { seconds: t.seconds + start.elapsed().as_secs_f64(), values: t.values + values as u64 });
        }

        /// Polls `req` until it completes; past `deadline`, reports `peer` as the rank that did
        /// not take part and aborts the job.
        fn finish<'a, D: ?Sized, S: Scope<'a>>(&self, mut req: Request<'a, D, S>, peer: usize, what: &str, deadline: Instant) {
            let mut polls = 0u32;
            loop {
                match req.test() {
                    Ok(_) => return,
                    Err(pending) => req = pending,
                }
                if Instant::now() >= deadline {
                    self.give_up(peer, what);
                }
                polls += 1;
                if polls < 10_000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }

        fn give_up(&self, peer: usize, what: &str) -> ! {
            let (rank, n) = (self.world.rank, self.seq.get());
            eprintln!(
                "error: rank {rank}: rank {peer} did not take part in collective #{n} ({what}) within {} s \
                 (set by {TIMEOUT_VAR}): it has died, hung or fallen behind; aborting the job",
                self.timeout.as_secs_f64()
            );
            self.comm.abort(1)
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
            let start = Instant::now();
            let (tag, deadline) = self.next();
            let what = format!("a sum of {} values", data.len());
            if self.world.rank == 0 {
                let mut theirs = vec![0f32; data.len()];
                for peer in 1..self.world.size {
                    mpi::request::scope(|scope| {
                        let req = self.comm.process_at_rank(peer as i32).immediate_receive_into_with_tag(scope, &mut theirs[..], tag);
                        self.finish(req, peer, &what, deadline);
                    });
                    data.iter_mut().zip(&theirs).for_each(|(d, t)| *d += t);
                }
                for peer in 1..self.world.size {
                    mpi::request::scope(|scope| {
                        let req = self.comm.process_at_rank(peer as i32).immediate_send_with_tag(scope, &data[..], tag);
                        self.finish(req, peer, &what, deadline);
                    });
                }
            } else {
                let root = self.comm.process_at_rank(0);
                mpi::request::scope(|scope| {
                    let req = root.immediate_send_with_tag(scope, &data[..], tag);
                    self.finish(req, 0, &what, deadline);
                });
                mpi::request::scope(|scope| {
                    let req = root.immediate_receive_into_with_tag(scope, &mut data[..], tag);
                    self.finish(req, 0, &what, deadline);
                });
            }
            self.count(start, data.len());
            Ok(())
        }
        fn broadcast(&self, root: usize, data: &mut [f32]) -> Result<()> {
            let start = Instant::now();
            let (tag, deadline) = self.next();
            let what = format!("a broadcast of {} values from rank {root}", data.len());
            if self.world.rank == root {
                for peer in (0..self.world.size).filter(|&p| p != root) {
                    mpi::request::scope(|scope| {
                        let req = self.comm.process_at_rank(peer as i32).immediate_send_with_tag(scope, &data[..], tag);
                        self.finish(req, peer, &what, deadline);
                    });
                }
            } else {
                mpi::request::scope(|scope| {
                    let req = self.comm.process_at_rank(root as i32).immediate_receive_into_with_tag(scope, &mut data[..], tag);
                    self.finish(req, root, &what, deadline);
                });
            }
            self.count(start, data.len());
            Ok(())
        }
        fn traffic(&self) -> Traffic {
            self.traffic.get()
        }
        fn barrier(&self) -> Result<()> {
            self.sum(&mut [0.0])
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
        fn broadcast(&self, _root: usize, _data: &mut [f32]) -> Result<()> {
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
    fn the_timeout_is_read_in_seconds_and_a_bad_one_is_named() {
        assert_eq!(timeout_from(None).unwrap().as_secs(), 1800);
        assert_eq!(timeout_from(Some("2.5")).unwrap().as_millis(), 2500);
        for bad in ["0", "-3", "ten", "inf", ""] {
            let e = timeout_from(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(TIMEOUT_VAR) && e.contains("positive number of seconds"), "{bad}: {e}");
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
