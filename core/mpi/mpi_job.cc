#include "core/mpi/mpi_job.h"

#include <mpi.h>

#include <cstdlib>

namespace moe {

MpiJob StartMpiJob(int* argc, char*** argv) {
  int provided = 0;
  MpiJob job;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &job.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &job.size);
  return job;
}

void FinishMpiJob() { MPI_Finalize(); }

void AbortMpiJob(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this says so to the compiler
}

}  // namespace moe
