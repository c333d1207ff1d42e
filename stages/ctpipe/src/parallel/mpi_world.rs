//! [`Collective`] over MPI's COMM_WORLD (rsmpi): the ranks `mpirun` or `srun --mpi=pmix`
//! started. MPI is finalised when the world is dropped (the end of a stage's `main`): a rank
//! that exits without MPI_Finalize makes `mpirun` report the whole job as failed.

use super::Collective;
use anyhow::{anyhow, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub struct MpiWorld {
    // Dropped in this order: the communicator, then the universe (MPI_Finalize).
    comm: SimpleCommunicator,
    _universe: Universe,
}

impl MpiWorld {
    pub fn init() -> Result<MpiWorld> {
        // None: MPI was initialised before in this process.
        let universe = mpi::initialize().ok_or_else(|| anyhow!("MPI_Init: MPI is already initialised in this process"))?;
        Ok(MpiWorld { comm: universe.world(), _universe: universe })
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast(&self, buf: &mut Vec<u8>) -> Result<()> {
        let root = self.comm.process_at_rank(0);
        let mut len = buf.len() as u64;
        root.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        root.broadcast_into(&mut buf[..]);
        Ok(())
    }

    fn gather_all(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = self.size();
        let mut counts = vec![0i32; n];
        let len = i32::try_from(mine.len()).map_err(|_| anyhow!("{} bytes are too many for one gather", mine.len()))?;
        self.comm.all_gather_into(&len, &mut counts[..]);
        let displs: Vec<i32> = counts.iter().scan(0i32, |at, &c| Some(std::mem::replace(at, *at + c))).collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut all = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.comm.all_gather_varcount_into(mine, &mut part);
        }
        Ok(counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect())
    }

    fn barrier(&self) -> Result<()> {
        self.comm.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    fn name(&self) -> &'static str {
        "MPI"
    }
}
