// The MPI job's life in a program's main: start, finish, abort. The programs call these rather
// than MPI itself, so that every MPI call lives in core/mpi.
#pragma once

namespace moe {

struct MpiJob {
  int rank = 0;  // this process's rank in MPI_COMM_WORLD
  int size = 0;  // ranks in the job
};

// MPI_Init_thread (funneled: only the thread that calls this calls MPI), then rank and size.
MpiJob StartMpiJob(int* argc, char*** argv);
// MPI_Finalize: waits for every rank to finalize too.
void FinishMpiJob();
// MPI_Abort on the whole job: mpirun ends every rank. Does not return.
[[noreturn]] void AbortMpiJob(int code);

}  // namespace moe
